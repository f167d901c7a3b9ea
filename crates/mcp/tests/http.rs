//! The HTTP gates over HTTPS: `serve_http` with a certificate and key
//! answers 401 (with a Bearer challenge) without a token or with a wrong
//! one, 403 for a foreign Origin, and 200 to an `initialize` with a valid
//! token; a token whose reference cannot be read yet is tried again on the
//! next request, and the first failure never lets anyone in.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::json;
use tidepool_controller::Executor;
use tidepool_controller::service::Service;
use tidepool_controller::testing::{Fake, ManualClock};
use tidepool_core::config::{self, EXAMPLE, McpScope, McpToken, SecretRef};
use tidepool_lab_sim::{KeyAlgorithm, TestCa};
use tidepool_mcp::{Guarded, HttpOptions, Keyring, Policy, TidepoolMcp, TokenSource};
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "s3cret-token-for-tests";

/// Resolves `env:OPS` to [`TOKEN`], once `ready` is set.
struct Tokens {
    ready: Arc<AtomicBool>,
}

impl TokenSource for Tokens {
    fn resolve<'a>(
        &'a self,
        reference: &'a SecretRef,
    ) -> Pin<Box<dyn Future<Output = Result<String, String>> + Send + 'a>> {
        Box::pin(async move {
            if !self.ready.load(Ordering::SeqCst) {
                return Err(format!("{reference}: not readable yet"));
            }
            Ok(format!("{TOKEN}\n"))
        })
    }
}

fn server() -> Guarded<TidepoolMcp<Fake, Fake, Fake, Fake>> {
    let fake = Fake::new();
    let clock = Arc::new(ManualClock::at(
        jiff::Timestamp::from_second(1_767_225_600).unwrap(),
    ));
    let exec = Arc::new(Executor::new(
        fake.clone(),
        fake.clone(),
        fake.clone(),
        fake,
        Arc::new(config::load(EXAMPLE).unwrap()),
        clock,
    ));
    let server = TidepoolMcp::new(Arc::new(Service::new(exec)));
    Guarded::new(
        Arc::new(server),
        TidepoolMcp::<Fake, Fake, Fake, Fake>::tools(),
        Policy::default(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_answers_401_403_and_200_as_the_token_and_origin_say() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let ca = TestCa::new("mcp-test-ca", KeyAlgorithm::EcdsaP256).unwrap();
    let issued = ca
        .issue_server(&["localhost"], &[IpAddr::V4(Ipv4Addr::LOCALHOST)])
        .unwrap();
    let dir = std::env::temp_dir().join(format!("tidepool-mcp-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
    std::fs::write(&cert, &issued.cert_pem).unwrap();
    std::fs::write(&key, &issued.key_pem).unwrap();

    let ready = Arc::new(AtomicBool::new(false));
    let tokens = [McpToken {
        name: "ops".into(),
        scope: McpScope::Write,
        token_from: SecretRef::Env("OPS".into()),
    }];
    let options = HttpOptions {
        addr: "127.0.0.1:0".parse().unwrap(),
        keyring: Arc::new(Keyring::new(
            &tokens,
            Tokens {
                ready: ready.clone(),
            },
        )),
        allowed_origins: vec!["https://agent.example.com:443".into()],
        allowed_hosts: Vec::new(),
        tls: Some((cert, key)),
    };
    let stop = CancellationToken::new();
    let guarded = server();
    let served = tidepool_mcp::serve_http(move || guarded.clone(), options, stop.clone())
        .await
        .unwrap();
    assert!(served.tls);
    let url = format!("https://localhost:{}/mcp", served.addr.port());
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.cert_pem().as_bytes()).unwrap())
        .build()
        .unwrap();
    let initialize = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "tls-test", "version": "1"}}});
    let post = |headers: Vec<(&'static str, String)>| {
        let mut request = http
            .post(&url)
            .header("accept", "application/json, text/event-stream")
            .json(&initialize);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        request.send()
    };
    let bearer = |t: &str| ("authorization", format!("Bearer {t}"));

    let none = post(Vec::new()).await.unwrap();
    assert_eq!(none.status(), 401);
    assert_eq!(
        none.headers()["www-authenticate"],
        "Bearer realm=\"tidepool\""
    );
    // The token cannot be read yet: even the right value is refused.
    assert_eq!(post(vec![bearer(TOKEN)]).await.unwrap().status(), 401);
    ready.store(true, Ordering::SeqCst);
    assert_eq!(post(vec![bearer("wrong")]).await.unwrap().status(), 401);
    let foreign = vec![bearer(TOKEN), ("origin", "http://evil.example".into())];
    assert_eq!(post(foreign).await.unwrap().status(), 403);
    let allowed = vec![
        bearer(TOKEN),
        ("origin", "https://agent.example.com".into()),
    ];
    let ok = post(allowed).await.unwrap();
    assert_eq!(ok.status(), 200);
    let body = ok.text().await.unwrap();
    assert!(body.contains("\"name\":\"tidepool\""), "{body}");
    assert!(!body.contains(TOKEN));

    stop.cancel();
    served.task.await.unwrap();
}
