"""Drives the Tidepool Proxmox VE emulator with proxmoxer, a client we did not write.

The Rust test `fidelity.rs` starts the emulator and runs this script with:
  PVE_HOST (host:port), PVE_USER (user@realm), PVE_TOKEN_NAME, PVE_TOKEN_VALUE,
  PVE_CA (path of the emulator's CA certificate), PVE_NODE, PVE_TEMPLATE (vmid).
The lab marks the guest agent up once the start task has succeeded.
Exits non-zero with a message on the first divergence from real PVE behaviour.
"""

import os
import sys
import time

from proxmoxer import ProxmoxAPI, ResourceException
from proxmoxer.tools import Tasks


def check(cond, what):
    if not cond:
        print(f"FIDELITY FAILURE: {what}", file=sys.stderr)
        sys.exit(1)
    print(f"ok - {what}")


def wait_ok(api, upid, what):
    status = Tasks.blocking_status(api, upid, timeout=60, polling_interval=0.05)
    check(status is not None, f"{what}: task finished within the timeout")
    check(status["status"] == "stopped", f"{what}: task status is stopped")
    check(status["exitstatus"] == "OK", f"{what}: exitstatus is OK (got {status.get('exitstatus')!r})")
    return status


def main():
    node = os.environ["PVE_NODE"]
    template = int(os.environ["PVE_TEMPLATE"])
    api = ProxmoxAPI(
        os.environ["PVE_HOST"],
        user=os.environ["PVE_USER"],
        token_name=os.environ["PVE_TOKEN_NAME"],
        token_value=os.environ["PVE_TOKEN_VALUE"],
        verify_ssl=os.environ["PVE_CA"],
        timeout=30,
    )

    version = api.version.get()
    check(version["version"].startswith("8."), "GET /version reports PVE 8")

    # A wrong token is refused with 401 and the real reason phrase.
    bad = ProxmoxAPI(
        os.environ["PVE_HOST"],
        user=os.environ["PVE_USER"],
        token_name=os.environ["PVE_TOKEN_NAME"],
        token_value="00000000-0000-0000-0000-000000000000",
        verify_ssl=os.environ["PVE_CA"],
        timeout=30,
    )
    try:
        bad.nodes.get()
        check(False, "a wrong token is refused")
    except ResourceException as e:
        check(e.status_code == 401, "a wrong token gets 401")
        check(e.content == "Authentication failed!", f"reason phrase is Authentication failed! (got {e.content!r})")

    nodes = {n["node"]: n for n in api.nodes.get()}
    check(node in nodes and nodes[node]["status"] == "online", f"node {node} is online")

    newid = int(api.cluster.nextid.get())
    check(newid >= 100, f"nextid returns a free id as a string ({newid})")
    try:
        api.cluster.nextid.get(vmid=template)
        check(False, "nextid refuses a taken id")
    except ResourceException as e:
        check(e.status_code == 400, "nextid of a taken id is a 400")
        check(e.errors == {"vmid": f"VM {template} already exists"}, f"the 400 names the vmid ({e.errors!r})")

    # Clone: a UPID, the new VM locked until the task ends.
    upid = api.nodes(node).qemu(template).clone.post(newid=newid, name="fidelity-worker-1", full=0)
    decoded = Tasks.decode_upid(upid)
    check(decoded["type"] == "qmclone" and decoded["id"] == str(template), f"clone returns a qmclone UPID ({upid})")
    check(decoded["node"] == node, "the UPID names the node")
    early = api.nodes(node).qemu(newid).config.get()
    check(early.get("lock") == "clone", "the new VM exists at once with lock 'clone'")
    wait_ok(api, upid, "clone")
    log = api.nodes(node).tasks(upid).log.get()
    check(log[-1]["t"] == "TASK OK", "the clone log ends with TASK OK")

    cfg = api.nodes(node).qemu(newid).config.get()
    check("lock" not in cfg, "the clone is unlocked after the task")
    check(cfg["name"] == "fidelity-worker-1", "the clone has the requested name")
    check("template" not in cfg, "the clone is not a template")
    src = api.nodes(node).qemu(template).config.get()
    check(cfg["net0"] != src["net0"], "the clone has a new MAC address")
    check(cfg["smbios1"] != src["smbios1"], "the clone has a new SMBIOS uuid")
    check(isinstance(cfg["memory"], str), "memory is returned as a string")
    check(isinstance(cfg["cores"], int), "cores is returned as a number")

    # Set config (async POST, then sync PUT), tags normalised.
    upid = api.nodes(node).qemu(newid).config.post(
        cores=4, memory=4096, tags="Tidepool;pool-small,tidepool", ciuser="talos",
        ipconfig0="ip=dhcp", description="claim fidelity-1",
    )
    wait_ok(api, upid, "config update")
    api.nodes(node).qemu(newid).config.put(sshkeys="ssh-ed25519%20AAAAC3Nza%20lab%40tidepool")
    cfg = api.nodes(node).qemu(newid).config.get()
    check(cfg["cores"] == 4 and cfg["memory"] == "4096", "cores and memory were set")
    check(cfg["tags"] == "pool-small;tidepool", f"tags are normalised ({cfg['tags']!r})")
    check(cfg["ciuser"] == "talos" and cfg["ipconfig0"] == "ip=dhcp", "cloud-init keys were set")

    # A boolean given as 'true' is refused as real PVE does.
    try:
        api.nodes(node).qemu(newid).config.put(onboot="true")
        check(False, "a 'true' boolean is refused")
    except ResourceException as e:
        check(e.status_code == 400, "a 'true' boolean gets 400")
        check("onboot" in (e.errors or {}), "the 400 names the parameter")

    # Start; the agent is not running until the lab marks it up.
    upid = api.nodes(node).qemu(newid).status.start.post()
    wait_ok(api, upid, "start")
    current = api.nodes(node).qemu(newid).status.current.get()
    check(current["status"] == "running", "status/current says running")

    addresses = None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            result = api.nodes(node).qemu(newid).agent("network-get-interfaces").get()
            addresses = [
                a["ip-address"]
                for iface in result["result"]
                if iface["name"] != "lo"
                for a in iface.get("ip-addresses", [])
            ]
            break
        except ResourceException as e:
            check(e.status_code == 500, "the agent answers 500 until it is up")
            check("QEMU guest agent is not running" in str(e), f"with the real message ({e})")
            time.sleep(0.05)
    check(addresses, f"the guest agent reports addresses ({addresses})")
    print(f"agent addresses: {addresses}")

    # A running VM cannot be deleted.
    try:
        api.nodes(node).qemu(newid).delete()
        check(False, "deleting a running VM fails")
    except ResourceException as e:
        check(e.status_code == 500, "deleting a running VM is a 500")
        check(e.content == f"VM {newid} is running - destroy failed", f"with the real reason ({e.content!r})")

    upid = api.nodes(node).qemu(newid).status.shutdown.post(timeout=120)
    wait_ok(api, upid, "shutdown")
    current = api.nodes(node).qemu(newid).status.current.get()
    check(current["status"] == "stopped", "status/current says stopped")

    upid = api.nodes(node).qemu(newid).delete(purge=1, **{"destroy-unreferenced-disks": 1})
    wait_ok(api, upid, "delete")
    try:
        api.nodes(node).qemu(newid).config.get()
        check(False, "the deleted VM is gone")
    except ResourceException as e:
        check(e.status_code == 500, "config of a deleted VM is a 500")
        expected = f"Configuration file 'nodes/{node}/qemu-server/{newid}.conf' does not exist"
        check(e.content == expected, f"with the real reason ({e.content!r})")

    print("FIDELITY OK")


if __name__ == "__main__":
    main()
