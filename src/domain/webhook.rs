//! Completion webhooks: which URLs are allowed, and how deliveries are signed.
use std::net::IpAddr;

use hmac::{Hmac, Mac};
use sha2::Sha256;

pub const SIGNATURE_HEADER: &str = "X-Wavalidate-Signature";
pub const DELIVERY_HEADER: &str = "X-Wavalidate-Delivery";

/// `sha256=<hex>` of HMAC-SHA256 over the exact body, keyed with the account's secret.
pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Addresses a webhook must not reach unless private targets are allowed:
/// loopback, private ranges, link-local (cloud metadata), CGNAT, unspecified, multicast.
pub fn is_forbidden_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || (o[0] == 100 && (64..128).contains(&o[1]))
                || o[0] == 0
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_forbidden_ip(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00 // unique local
                || (first & 0xffc0) == 0xfe80 // link-local
        }
    }
}

/// Shape checks that need no network: an absolute http(s) URL with a host, no credentials.
pub fn parse_callback_url(text: &str) -> Result<reqwest::Url, String> {
    let url =
        reqwest::Url::parse(text.trim()).map_err(|e| format!("callback_url is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("callback_url must be an http:// or https:// URL".into());
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("callback_url has no host".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("callback_url must not carry credentials".into());
    }
    if text.len() > 2048 {
        return Err("callback_url is longer than 2048 characters".into());
    }
    Ok(url)
}

/// Resolves the URL's host; refuses it when any address is forbidden (unless allowed).
pub async fn check_callback_target(url: &reqwest::Url, allow_private: bool) -> Result<(), String> {
    if allow_private {
        return Ok(());
    }
    let host = url.host_str().unwrap_or_default().trim_matches(['[', ']']);
    let port = url.port_or_known_default().unwrap_or(443);
    let addrs: Vec<IpAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![ip],
        Err(_) => tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| format!("callback_url host {host:?} does not resolve: {e}"))?
            .map(|a| a.ip())
            .collect(),
    };
    if addrs.is_empty() {
        return Err(format!("callback_url host {host:?} has no address"));
    }
    if let Some(ip) = addrs.into_iter().find(|ip| is_forbidden_ip(*ip)) {
        return Err(format!(
            "callback_url resolves to {ip}, a loopback or private address; only public hosts may receive webhooks"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_like_the_documented_recipe() {
        // python3 -c 'import hmac,hashlib;print(hmac.new(b"secret",b"{\"batch_id\":\"x\"}",hashlib.sha256).hexdigest())'
        assert_eq!(
            sign("secret", br#"{"batch_id":"x"}"#),
            "sha256=712df8150d28d7aa8acb76d869c763cd101022f4ada0710d5d3b4100e5c2f023"
        );
        assert_ne!(sign("secret", b"{}"), sign("other", b"{}"));
    }

    #[test]
    fn refuses_private_and_odd_targets() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(is_forbidden_ip(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["8.8.8.8", "1.1.1.1", "2606:4700::1111"] {
            assert!(!is_forbidden_ip(ip.parse().unwrap()), "{ip}");
        }
        assert!(parse_callback_url("ftp://example.com/x").is_err());
        assert!(parse_callback_url("https://user:pw@example.com/x").is_err());
        assert!(parse_callback_url("not a url").is_err());
        assert!(parse_callback_url("https://example.com/hook").is_ok());
    }

    #[tokio::test]
    async fn loopback_targets_need_the_private_switch() {
        let url = parse_callback_url("http://127.0.0.1:9/hook").unwrap();
        assert!(check_callback_target(&url, false).await.is_err());
        assert!(check_callback_target(&url, true).await.is_ok());
        let url = parse_callback_url("http://localhost:9/hook").unwrap();
        assert!(check_callback_target(&url, false).await.is_err());
    }
}
