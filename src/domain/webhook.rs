//! Completion webhooks: which URLs are allowed, and how deliveries are signed.
use std::net::IpAddr;

use hmac::{Hmac, Mac};
use sha2::Sha256;

pub const SIGNATURE_HEADER: &str = "X-Wavalidate-Signature";
pub const TIMESTAMP_HEADER: &str = "X-Wavalidate-Timestamp";
pub const DELIVERY_HEADER: &str = "X-Wavalidate-Delivery";

/// `sha256=<hex>` of HMAC-SHA256 over `<timestamp>.<body>` (the timestamp as sent in
/// `X-Wavalidate-Timestamp`, Unix seconds), keyed with the account's secret: the
/// receiver refuses an old timestamp, so a captured delivery cannot be replayed.
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Names resolved at once for callback checks, and how long one may take: resolution
/// runs on tokio's blocking pool (getaddrinfo), never on the request threads, and a
/// flood of slow names can neither take that pool nor hold a request for long.
static RESOLVING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(32);
const RESOLVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// The address ranges a webhook must not reach unless private targets are allowed: IANA's
/// IPv4 and IPv6 special-purpose registries (and multicast, and the ranges that embed an
/// IPv4 address), each as (first address, prefix length, what it is). Anything else is public.
const SPECIAL_V4: [(u32, u8, &str); 19] = [
    (0x0000_0000, 8, "this network"),
    (0x0A00_0000, 8, "private"),
    (0x6440_0000, 10, "shared address space (CGNAT)"),
    (0x7F00_0000, 8, "loopback"),
    (0xA9FE_0000, 16, "link-local (cloud metadata)"),
    (0xAC10_0000, 12, "private"),
    (0xC000_0000, 24, "IETF protocol assignments"),
    (0xC000_0200, 24, "documentation (TEST-NET-1)"),
    (0xC01F_C400, 24, "AS112-v4"),
    (0xC034_C100, 24, "AMT"),
    (0xC058_6300, 24, "6to4 relay anycast"),
    (0xC0A8_0000, 16, "private"),
    (0xC0AF_3000, 24, "direct delegation AS112"),
    (0xC612_0000, 15, "benchmarking"),
    (0xC633_6400, 24, "documentation (TEST-NET-2)"),
    (0xCB00_7100, 24, "documentation (TEST-NET-3)"),
    (0xE000_0000, 4, "multicast"),
    (0xFFFF_FFFF, 32, "limited broadcast"),
    (0xF000_0000, 4, "reserved"),
];

const SPECIAL_V6: [(u128, u8, &str); 18] = [
    (0, 128, "unspecified"),
    (1, 128, "loopback"),
    (0, 96, "IPv4-compatible (deprecated)"),
    (0xffff_0000_0000, 96, "IPv4-mapped"),
    (0xffff_0000_0000_0000, 96, "IPv4-translated"),
    (0x0064_ff9b_u128 << 96, 96, "NAT64"),
    (0x0064_ff9b_0001_u128 << 80, 48, "local-use NAT64"),
    (0x0100_u128 << 112, 64, "discard-only"),
    (0x0100_0000_0000_0001_u128 << 64, 64, "dummy IPv6 prefix"),
    (0x3fff_u128 << 112, 20, "documentation"),
    (0x5f00_u128 << 112, 16, "segment routing (SRv6) SIDs"),
    (
        0x2001_u128 << 112,
        23,
        "IETF protocol assignments (Teredo...)",
    ),
    (0x2001_0db8_u128 << 96, 32, "documentation"),
    (0x2002_u128 << 112, 16, "6to4"),
    (0x2620_004f_8000_u128 << 80, 48, "direct delegation AS112"),
    (0xfc00_u128 << 112, 7, "unique local"),
    (0xfe80_u128 << 112, 10, "link-local"),
    (0xfec0_u128 << 112, 10, "site-local (deprecated)"),
];

/// The special-purpose range holding `ip`, if any (multicast IPv6 too).
pub fn special_range(ip: IpAddr) -> Option<&'static str> {
    let within = |addr: u128, base: u128, len: u8, bits: u32| {
        let shift = bits - u32::from(len);
        shift >= bits || (addr >> shift) == (base >> shift)
    };
    match ip {
        IpAddr::V4(v4) => SPECIAL_V4
            .iter()
            .find(|(base, len, _)| within(u32::from(v4).into(), (*base).into(), *len, 32))
            .map(|(_, _, name)| *name),
        IpAddr::V6(v6) => {
            let addr = u128::from(v6);
            if v6.is_multicast() {
                return Some("multicast");
            }
            SPECIAL_V6
                .iter()
                .find(|(base, len, _)| within(addr, *base, *len, 128))
                .map(|(_, _, name)| *name)
        }
    }
}

/// Addresses a webhook must not reach unless private targets are allowed.
pub fn is_forbidden_ip(ip: IpAddr) -> bool {
    special_range(ip).is_some()
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

const NOT_PUBLIC: &str =
    "callback_url is not a public address that resolves; only public hosts may receive webhooks";

/// Resolves the URL's host; refuses it when any address is forbidden (unless allowed).
pub async fn check_callback_target(url: &reqwest::Url, allow_private: bool) -> Result<(), String> {
    if allow_private {
        return Ok(());
    }
    let host = url.host_str().unwrap_or_default().trim_matches(['[', ']']);
    let port = url.port_or_known_default().unwrap_or(443);
    let addrs: Vec<IpAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![ip],
        Err(_) => {
            let resolved = tokio::time::timeout(RESOLVE_TIMEOUT, async {
                let _turn = RESOLVING.acquire().await.expect("never closed");
                tokio::net::lookup_host((host, port)).await
            })
            .await
            .map_err(|_| NOT_PUBLIC.to_string())?;
            resolved
                .map_err(|_| NOT_PUBLIC.to_string())?
                .map(|a| a.ip())
                .collect()
        }
    };
    // One answer whether a name does not resolve, resolves too slowly or resolves to a
    // private address: a caller must not map (or find) the operator's internal names.
    if addrs.is_empty() || addrs.into_iter().any(is_forbidden_ip) {
        return Err(NOT_PUBLIC.into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_like_the_documented_recipe() {
        // python3 -c 'import hmac,hashlib;print(hmac.new(b"secret",b"1700000000.{\"batch_id\":\"x\"}",hashlib.sha256).hexdigest())'
        assert_eq!(
            sign("secret", 1_700_000_000, br#"{"batch_id":"x"}"#),
            "sha256=1d817b528a7d0c9bab71bf397e7a9d299561240f0568fd8b20b8b342259b1e89"
        );
        assert_ne!(sign("secret", 1, b"{}"), sign("other", 1, b"{}"));
        assert_ne!(
            sign("secret", 1, b"{}"),
            sign("secret", 2, b"{}"),
            "the time is signed"
        );
    }

    /// One address in (and one just outside, where it matters) each row of the table.
    #[test]
    fn refuses_every_special_purpose_range() {
        for (ip, range) in [
            ("0.1.2.3", "this network"),
            ("10.1.2.3", "private"),
            ("100.64.0.1", "shared address space (CGNAT)"),
            ("127.0.0.1", "loopback"),
            ("169.254.169.254", "link-local (cloud metadata)"),
            ("172.31.255.255", "private"),
            ("192.0.0.8", "IETF protocol assignments"),
            ("192.0.2.1", "documentation (TEST-NET-1)"),
            ("192.31.196.1", "AS112-v4"),
            ("192.52.193.1", "AMT"),
            ("192.88.99.1", "6to4 relay anycast"),
            ("192.168.1.1", "private"),
            ("192.175.48.1", "direct delegation AS112"),
            ("198.19.255.255", "benchmarking"),
            ("198.51.100.7", "documentation (TEST-NET-2)"),
            ("203.0.113.9", "documentation (TEST-NET-3)"),
            ("224.0.0.1", "multicast"),
            ("240.0.0.1", "reserved"),
            ("255.255.255.255", "limited broadcast"),
            ("::", "unspecified"),
            ("::1", "loopback"),
            ("::127.0.0.1", "IPv4-compatible (deprecated)"),
            ("::ffff:127.0.0.1", "IPv4-mapped"),
            ("::ffff:0:127.0.0.1", "IPv4-translated"),
            ("64:ff9b::10.0.0.1", "NAT64"),
            ("64:ff9b:1::1", "local-use NAT64"),
            ("100::1", "discard-only"),
            ("100:0:0:1::1", "dummy IPv6 prefix"),
            ("3fff::1", "documentation"),
            ("5f00::1", "segment routing (SRv6) SIDs"),
            ("2001::1", "IETF protocol assignments (Teredo...)"),
            ("2001:db8::1", "documentation"),
            ("2002:c0a8:101::1", "6to4"),
            ("2620:4f:8000::1", "direct delegation AS112"),
            ("fd00::1", "unique local"),
            ("fe80::1", "link-local"),
            ("fec0::1", "site-local (deprecated)"),
            ("ff02::1", "multicast"),
        ] {
            assert_eq!(special_range(ip.parse().unwrap()), Some(range), "{ip}");
        }
        for ip in [
            "8.8.8.8",
            "1.1.1.1",
            "100.128.0.1",
            "172.32.0.1",
            "198.20.0.1",
            "223.255.255.255",
            "2606:4700::1111",
            "2001:4860:4860::8888",
            "3fff:1000::1",
            "5f01::1",
            "2620:4f:8001::1",
            "100:0:0:2::1",
        ] {
            assert_eq!(special_range(ip.parse().unwrap()), None, "{ip}");
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
        let refused = check_callback_target(&url, false).await.unwrap_err();
        // Not what the name resolves to: callers must not map the operator's names.
        assert!(
            !refused.contains("127.0.0.1") && !refused.contains("::1"),
            "{refused}"
        );
        assert!(refused.contains("not a public address"), "{refused}");
    }
}
