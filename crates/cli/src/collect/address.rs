//! Where the collector sends: kubeci's address, resolved once, when the collector starts.
//!
//! Every container of a pod shares one `/etc/hosts` (and `/etc/resolv.conf`), writable by
//! a build step running as root: a name resolved after the build step started means what
//! the build step made it mean, and the collector would hand the pod's token and files to
//! the build step itself (finding O4 of issue 30's second review). So the collector
//! resolves `--server`'s host before it says it is ready — its startup probe holds the
//! build step back until then — and later connects to those addresses only
//! ([`kubeci_https::https_client_to`] never resolves a name; TLS still checks the host's).

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use hyper::Uri;
use kubeci_https::KeptAddresses;

use super::say;

/// How long the collector tries to resolve kubeci's host at start, by default: the
/// cluster's DNS may not answer in a pod's first second. Well within the collector's
/// startup probe ([`kubeci_render::collector::COLLECT_STARTUP_SECONDS`]), which lets the
/// build step start once the collector is ready — resolved or given up.
pub(super) const RESOLVE_WITHIN: &str = "30s";

/// [`RESOLVE_WITHIN`] as a duration.
pub(super) fn resolve_within_by_default() -> Duration {
    Duration::from_secs(30)
}

/// The first pause between two attempts; each next one doubles, up to [`LONGEST_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(250);

/// The longest pause between two attempts.
const LONGEST_PAUSE: Duration = Duration::from_secs(2);

/// The host and port `url` names (an IPv6 host without its brackets; the scheme's port
/// when it names none).
pub(super) fn host_and_port(url: &str) -> Result<(String, u16), String> {
    let uri: Uri = (url.parse()).map_err(|e| format!("--server {url} is not a URL: {e}"))?;
    let host = (uri.host())
        .filter(|host| !host.is_empty())
        .ok_or_else(|| format!("--server {url} names no host"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let default_port = match uri.scheme_str() {
        Some("http") => 80,
        Some("https") => 443,
        _ => return Err(format!("--server {url}: give an http:// or https:// URL")),
    };
    let port = uri.port_u16().unwrap_or(default_port);
    Ok((host.to_owned(), port))
}

/// The pause after failed attempt `attempt` (1, 2, …).
fn pause_after(attempt: u32) -> Duration {
    FIRST_PAUSE
        .saturating_mul(1 << attempt.saturating_sub(1).min(8))
        .min(LONGEST_PAUSE)
}

/// `url`'s host resolved — tried again until `within` passed, saying why the first time
/// it fails — or why it is not, for the collector to say when it would have sent.
pub(super) async fn keep(url: &str, within: Duration) -> Result<KeptAddresses, String> {
    let (host, port) = host_and_port(url)?;
    let shown = format!("{}s", within.as_secs());
    let mut last = String::from("no answer");
    let resolving = async {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match resolve(&host, port).await {
                Ok(addresses) => return addresses,
                Err(why) => {
                    if attempt == 1 {
                        say(&format!(
                            "cannot resolve kubeci's host {host} yet ({why}): trying again for up to {shown}"
                        ));
                    }
                    last = why;
                }
            }
            tokio::time::sleep(pause_after(attempt)).await;
        }
    };
    match tokio::time::timeout(within, resolving).await {
        Ok(addresses) => {
            let listed: Vec<String> = addresses.iter().map(SocketAddr::to_string).collect();
            say(&format!(
                "kubeci's host {host} is {}: the build's files go there only, whatever the name means later",
                listed.join(", ")
            ));
            Ok(KeptAddresses::new(&host, addresses))
        }
        Err(_) => {
            say(&format!(
                "cannot resolve kubeci's host {host} within {shown} ({last}): the build goes on, but its files will not be handed over"
            ));
            Err(format!(
                "kubeci's host {host} could not be resolved when the collector started ({last}); \
                 it is never resolved once the build step runs, which could have changed what it means"
            ))
        }
    }
}

/// One attempt: the system's answer for `host` (off the runtime: the resolver blocks).
async fn resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
    let target = (host.to_owned(), port);
    let answer = tokio::task::spawn_blocking(move || target.to_socket_addrs())
        .await
        .map_err(|e| format!("resolving stopped: {e}"))?;
    match answer {
        Ok(addresses) => {
            let addresses: Vec<SocketAddr> = addresses.collect();
            if addresses.is_empty() {
                Err("no address".into())
            } else {
                Ok(addresses)
            }
        }
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_and_port_of_a_url_are_read_with_the_scheme_s_port_by_default() {
        let read = |url| host_and_port(url).unwrap();
        assert_eq!(
            read("http://kubeci.ci.svc:8080"),
            ("kubeci.ci.svc".into(), 8080)
        );
        assert_eq!(
            read("http://kubeci.ci.svc/base"),
            ("kubeci.ci.svc".into(), 80)
        );
        assert_eq!(
            read("https://kubeci.example"),
            ("kubeci.example".into(), 443)
        );
        assert_eq!(read("http://[fd00::1]:81"), ("fd00::1".into(), 81));
        assert_eq!(read("http://10.0.0.5"), ("10.0.0.5".into(), 80));
        for url in ["kubeci:8080", "ftp://kubeci.example"] {
            let refused = host_and_port(url).unwrap_err();
            assert!(refused.contains("http:// or https://"), "{refused}");
        }
        assert!(host_and_port("http://").is_err());
    }

    #[test]
    fn attempts_are_spaced_out_up_to_two_seconds() {
        let pauses: Vec<u128> = (1..=6).map(|a| pause_after(a).as_millis()).collect();
        assert_eq!(pauses, [250, 500, 1000, 2000, 2000, 2000]);
        assert_eq!(pause_after(u32::MAX), LONGEST_PAUSE);
    }

    #[test]
    fn resolving_at_start_ends_well_within_the_startup_probe() {
        let within = crate::serve::duration_flag("--resolve-within", RESOLVE_WITHIN).unwrap();
        assert_eq!(within, resolve_within_by_default());
        let probe = kubeci_render::collector::COLLECT_STARTUP_SECONDS;
        let probe = Duration::from_secs(u64::try_from(probe).unwrap());
        assert!(
            within * 2 <= probe,
            "{within:?} to resolve, {probe:?} of probe"
        );
    }
}
