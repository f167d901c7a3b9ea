//! Wire-level checks: the generated messages encode with the field numbers
//! and wire types real Talos uses (facts §1.3), byte for byte.

use prost::Message;
use tidepool_talos_proto::common::Metadata;
use tidepool_talos_proto::machine::{
    ApplyConfiguration, ApplyConfigurationRequest, ApplyConfigurationResponse, Hostname,
    HostnameResponse, RebootRequest, ResetPartitionSpec, ResetRequest, UpgradeRequest,
    apply_configuration_request::Mode, reset_request::WipeMode,
};

/// A protobuf tag byte: field number and wire type (0 varint, 2 length-delimited).
fn tag(field: u8, wire_type: u8) -> u8 {
    (field << 3) | wire_type
}

#[test]
fn apply_configuration_request_puts_data_in_field_1_and_mode_in_field_4() {
    let request = ApplyConfigurationRequest {
        data: b"version: v1alpha1".to_vec(),
        mode: Mode::NoReboot as i32,
        dry_run: true,
        try_mode_timeout: None,
    };
    let mut expected = vec![tag(1, 2), 17];
    expected.extend_from_slice(b"version: v1alpha1");
    expected.extend_from_slice(&[tag(4, 0), 2, tag(5, 0), 1]);
    assert_eq!(request.encode_to_vec(), expected);
}

#[test]
fn apply_configuration_modes_have_the_talos_numbers() {
    assert_eq!(Mode::Reboot as i32, 0);
    assert_eq!(Mode::Auto as i32, 1);
    assert_eq!(Mode::NoReboot as i32, 2);
    assert_eq!(Mode::Staged as i32, 3);
    assert_eq!(Mode::Try as i32, 4);
}

#[test]
fn apply_configuration_request_fields_2_and_3_are_skipped_when_decoding() {
    // An old client sending the removed booleans on_reboot = 2 and
    // immediate = 3 must not break decoding.
    let bytes = [tag(2, 0), 1, tag(3, 0), 1, tag(4, 0), 1];
    let request = ApplyConfigurationRequest::decode(&bytes[..]).unwrap();
    assert_eq!(request.mode, Mode::Auto as i32);
    assert!(request.data.is_empty());
}

#[test]
fn try_mode_timeout_is_a_duration_in_field_6() {
    let request = ApplyConfigurationRequest {
        try_mode_timeout: Some(prost_types::Duration {
            seconds: 60,
            nanos: 0,
        }),
        ..Default::default()
    };
    assert_eq!(request.encode_to_vec(), vec![tag(6, 2), 2, tag(1, 0), 60]);
}

#[test]
fn replies_carry_messages_in_field_1_and_metadata_in_field_1_of_each() {
    let reply = HostnameResponse {
        messages: vec![Hostname {
            metadata: Some(Metadata {
                hostname: "a".into(),
                ..Default::default()
            }),
            hostname: "w".into(),
        }],
    };
    // messages(1) { metadata(1) { hostname(1) "a" } hostname(2) "w" }
    let expected = vec![
        tag(1, 2),
        8,
        tag(1, 2),
        3,
        tag(1, 2),
        1,
        b'a',
        tag(2, 2),
        1,
        b'w',
    ];
    assert_eq!(reply.encode_to_vec(), expected);
}

#[test]
fn concatenated_replies_decode_as_one_reply_with_all_messages() {
    // apid joins the replies of several nodes by concatenating their bytes.
    let one = |mode: Mode| ApplyConfigurationResponse {
        messages: vec![ApplyConfiguration {
            mode: mode as i32,
            ..Default::default()
        }],
    };
    let mut joined = one(Mode::Reboot).encode_to_vec();
    joined.extend(one(Mode::NoReboot).encode_to_vec());
    let reply = ApplyConfigurationResponse::decode(&joined[..]).unwrap();
    assert_eq!(reply.messages.len(), 2);
    assert_eq!(reply.messages[1].mode, Mode::NoReboot as i32);
}

#[test]
fn reboot_reset_and_upgrade_requests_use_the_talos_field_numbers() {
    let reboot = RebootRequest { mode: 1 };
    assert_eq!(reboot.encode_to_vec(), vec![tag(1, 0), 1]);

    let reset = ResetRequest {
        graceful: true,
        reboot: true,
        system_partitions_to_wipe: vec![ResetPartitionSpec {
            label: "STATE".into(),
            wipe: true,
        }],
        user_disks_to_wipe: vec![],
        mode: WipeMode::SystemDisk as i32,
    };
    let mut expected = vec![tag(1, 0), 1, tag(2, 0), 1, tag(3, 2), 9, tag(1, 2), 5];
    expected.extend_from_slice(b"STATE");
    expected.extend_from_slice(&[tag(2, 0), 1, tag(5, 0), 1]);
    assert_eq!(reset.encode_to_vec(), expected);

    let upgrade = UpgradeRequest {
        image: "i".into(),
        preserve: true,
        stage: true,
        force: true,
        reboot_mode: 1,
    };
    assert_eq!(
        upgrade.encode_to_vec(),
        vec![
            tag(1, 2),
            1,
            b'i',
            tag(2, 0),
            1,
            tag(3, 0),
            1,
            tag(4, 0),
            1,
            tag(5, 0),
            1
        ]
    );
}

#[test]
fn the_method_paths_use_the_machine_package() {
    assert_eq!(
        tidepool_talos_proto::machine_method_path("ApplyConfiguration"),
        "/machine.MachineService/ApplyConfiguration"
    );
}
