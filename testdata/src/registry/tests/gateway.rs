//! [`TokenAuthGateway`]: challenge, token, retry; expiry, revocation, scopes.

use std::collections::BTreeMap;
use std::thread;
use std::time::Duration;

use super::{ACCEPT_MANIFESTS, registry_with_sample};
use crate::registry::{
    AnonymousAccess, GatewayConfig, RawClient, RawResponse, TokenAuthGateway, TokenRequest,
    basic_auth, origin_form,
};

const MANIFEST: &str = "/v2/test/sample/manifests/1.0";

/// Parses `Bearer k="v",k="v"` into its parameters.
fn challenge(response: &RawResponse) -> BTreeMap<String, String> {
    let header = response.header("www-authenticate").expect("a challenge");
    let params = header.strip_prefix("Bearer ").expect("a Bearer challenge");
    params
        .split("\",")
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.trim_matches('"').to_owned()))
        .collect()
}

/// Follows `challenge` to the token endpoint; returns the token JSON.
fn fetch_token(params: &BTreeMap<String, String>, auth: Option<&str>) -> RawResponse {
    let realm = &params["realm"];
    let addr = realm
        .strip_prefix("http://")
        .unwrap()
        .split('/')
        .next()
        .unwrap();
    let mut target = format!("{}?service={}", origin_form(realm), params["service"]);
    if let Some(scope) = params.get("scope") {
        target.push_str(&format!(
            "&scope={}",
            scope.replace(':', "%3A").replace(',', "%2C")
        ));
    }
    let headers: Vec<(&str, &str)> = auth.map(|a| ("Authorization", a)).into_iter().collect();
    RawClient::new(addr.parse().unwrap())
        .get(&target, &headers)
        .unwrap()
}

fn token_of(response: &RawResponse) -> String {
    assert_eq!(response.status, 200, "{}", response.text());
    let json: serde_json::Value = serde_json::from_slice(&response.body).unwrap();
    json["token"].as_str().unwrap().to_owned()
}

#[test]
fn challenge_token_retry() {
    let (registry, pushed) = registry_with_sample();
    let gateway = TokenAuthGateway::start(registry.addr(), GatewayConfig::default()).unwrap();
    let mut client = RawClient::new(gateway.addr());

    let base = client.get("/v2/", &[]).unwrap();
    assert_eq!(base.status, 401);
    let params = challenge(&base);
    assert_eq!(params["realm"], gateway.token_url());
    assert_eq!(params["service"], "strata-test");
    assert!(!params.contains_key("scope"));
    assert_ne!(gateway.token_url(), format!("{}/token", gateway.url()));

    let denied = client
        .get(MANIFEST, &[("Accept", ACCEPT_MANIFESTS)])
        .unwrap();
    assert_eq!(denied.status, 401);
    assert_eq!(
        denied.header("docker-distribution-api-version"),
        Some("registry/2.0")
    );
    let params = challenge(&denied);
    assert_eq!(params["scope"], "repository:test/sample:pull");

    let response = fetch_token(&params, None);
    let json: serde_json::Value = serde_json::from_slice(&response.body).unwrap();
    assert_eq!(json["token"], json["access_token"]);
    assert_eq!(json["expires_in"], 300);
    let issued_at = json["issued_at"].as_str().unwrap();
    time::OffsetDateTime::parse(issued_at, &time::format_description::well_known::Rfc3339).unwrap();
    let bearer = format!("Bearer {}", token_of(&response));

    let ok = client
        .get(
            MANIFEST,
            &[("Accept", ACCEPT_MANIFESTS), ("Authorization", &bearer)],
        )
        .unwrap();
    assert_eq!(ok.status, 200);
    assert_eq!(crate::sha256_digest(&ok.body), pushed.target.digest);
    let layer = &pushed.images[0].layers[0];
    let blob = client
        .get(
            &format!("/v2/test/sample/blobs/{}", layer.digest),
            &[("Authorization", &bearer)],
        )
        .unwrap();
    assert_eq!((blob.status, blob.body.len() as u64), (200, layer.size));
    // The token is scoped: another repository is refused.
    let other = client
        .get("/v2/other/manifests/1", &[("Authorization", &bearer)])
        .unwrap();
    assert_eq!(challenge(&other)["error"], "insufficient_scope");

    assert_eq!(
        client.connections_opened(),
        1,
        "keep-alive through the gateway"
    );
    assert_eq!(gateway.tokens_issued(), 1);
    assert_eq!(gateway.challenges_sent(), 3);
    assert_eq!(
        gateway.token_requests(),
        [TokenRequest {
            user: None,
            scopes: vec!["repository:test/sample:pull".into()],
            granted: true
        }]
    );
}

#[test]
fn tokens_expire_and_can_be_revoked() {
    let (registry, _) = registry_with_sample();
    let config = GatewayConfig::default().token_lifetime(Duration::from_millis(400));
    let gateway = TokenAuthGateway::start(registry.addr(), config).unwrap();
    let mut client = RawClient::new(gateway.addr());
    let params = challenge(&client.get(MANIFEST, &[]).unwrap());
    let response = fetch_token(&params, None);
    let json: serde_json::Value = serde_json::from_slice(&response.body).unwrap();
    assert_eq!(json["expires_in"], 1, "rounded up to whole seconds");
    let bearer = format!("Bearer {}", token_of(&response));
    let headers = [
        ("Accept", ACCEPT_MANIFESTS),
        ("Authorization", bearer.as_str()),
    ];
    assert_eq!(client.get(MANIFEST, &headers).unwrap().status, 200);
    thread::sleep(Duration::from_millis(500));
    let expired = client.get(MANIFEST, &headers).unwrap();
    assert_eq!(expired.status, 401);
    assert_eq!(challenge(&expired)["error"], "invalid_token");

    gateway.set_token_lifetime(Duration::from_secs(60));
    let bearer = format!("Bearer {}", token_of(&fetch_token(&params, None)));
    let headers = [
        ("Accept", ACCEPT_MANIFESTS),
        ("Authorization", bearer.as_str()),
    ];
    assert_eq!(client.get(MANIFEST, &headers).unwrap().status, 200);
    gateway.revoke_all();
    assert_eq!(client.get(MANIFEST, &headers).unwrap().status, 401);
    assert_eq!(gateway.tokens_issued(), 2);
}

#[test]
fn push_needs_credentials_and_bad_ones_are_refused() {
    let (registry, _) = registry_with_sample();
    let config = GatewayConfig::default().user("alice", "pw");
    let gateway = TokenAuthGateway::start(registry.addr(), config).unwrap();
    let mut client = RawClient::new(gateway.addr());
    let upload = "/v2/test/sample/blobs/uploads/";
    let params = challenge(&client.request("POST", upload, &[], &[]).unwrap());
    assert_eq!(params["scope"], "repository:test/sample:pull,push");

    // Anonymous tokens carry pull only.
    let anonymous = format!("Bearer {}", token_of(&fetch_token(&params, None)));
    let refused = client
        .request("POST", upload, &[("Authorization", &anonymous)], &[])
        .unwrap();
    assert_eq!(challenge(&refused)["error"], "insufficient_scope");

    let wrong = fetch_token(&params, Some(&basic_auth("alice", "nope")));
    assert_eq!(wrong.status, 401);
    assert!(
        wrong
            .header("www-authenticate")
            .unwrap()
            .starts_with("Basic ")
    );

    let bearer = format!(
        "Bearer {}",
        token_of(&fetch_token(&params, Some(&basic_auth("alice", "pw"))))
    );
    let started = client
        .request("POST", upload, &[("Authorization", &bearer)], &[])
        .unwrap();
    assert_eq!(started.status, 202, "{}", started.text());
    // The registry builds Location from the Host header, which the gateway keeps.
    let location = started.header("location").unwrap();
    assert!(location.starts_with(&gateway.url()), "{location}");
    let bytes = b"pushed through the gateway";
    let target = format!(
        "{}&digest={}",
        origin_form(location),
        crate::sha256_digest(bytes)
    );
    let put = client
        .request("PUT", &target, &[("Authorization", &bearer)], bytes)
        .unwrap();
    assert_eq!(put.status, 201, "{}", put.text());

    let log = gateway.token_requests();
    assert_eq!(
        log.iter().map(|r| r.granted).collect::<Vec<_>>(),
        [true, false, true]
    );
    assert_eq!(log[2].user.as_deref(), Some("alice"));
}

#[test]
fn denied_anonymous_access_needs_a_user() {
    let (registry, _) = registry_with_sample();
    let config = GatewayConfig::default()
        .anonymous(AnonymousAccess::Denied)
        .user("bob", "pw");
    let gateway = TokenAuthGateway::start(registry.addr(), config).unwrap();
    let params = challenge(&RawClient::new(gateway.addr()).get(MANIFEST, &[]).unwrap());
    assert_eq!(fetch_token(&params, None).status, 401);
    assert_eq!(
        fetch_token(&params, Some(&basic_auth("bob", "pw"))).status,
        200
    );
    assert_eq!(gateway.tokens_issued(), 1);
}
