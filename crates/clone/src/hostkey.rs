//! SSH host key fingerprints, as `ssh-keygen -l` prints them, and `ssh-keyscan` output.

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use base64::Engine;
use sha2::{Digest, Sha256};

/// One host key a server presented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostKey {
    /// `ssh-ed25519`, `ssh-rsa`, `ecdsa-sha2-nistp256`, ...
    pub key_type: String,
    /// The base64 key blob, as in `known_hosts`.
    pub blob: String,
    /// `SHA256:` + unpadded base64 of the SHA-256 of the blob.
    pub fingerprint: String,
}

/// The fingerprint of a base64 key blob, or `None` if it is not base64.
pub fn fingerprint(blob: &str) -> Option<String> {
    let raw = STANDARD.decode(blob.trim()).ok()?;
    Some(format!(
        "SHA256:{}",
        STANDARD_NO_PAD.encode(Sha256::digest(&raw))
    ))
}

/// The keys in `ssh-keyscan` output (`host type blob` lines; `#` lines are comments).
pub fn parse_keyscan(output: &str) -> Vec<HostKey> {
    output
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let _host = fields.next()?;
            let key_type = fields.next()?.to_owned();
            let blob = fields.next()?.to_owned();
            let fingerprint = fingerprint(&blob)?;
            Some(HostKey {
                key_type,
                blob,
                fingerprint,
            })
        })
        .collect()
}

/// Normalises a pinned fingerprint: surrounding space and base64 padding do not matter.
pub fn normalize(pinned: &str) -> String {
    pinned.trim().trim_end_matches('=').to_owned()
}

/// The `HostKeyAlgorithms` that let ssh use a key of this type.
pub fn algorithms_for(key_type: &str) -> String {
    match key_type {
        "ssh-rsa" => "rsa-sha2-512,rsa-sha2-256,ssh-rsa".to_owned(),
        other => other.to_owned(),
    }
}

/// The `known_hosts` name of a host: `[host]:port` for ports other than 22.
pub fn known_hosts_name(host: &str, port: Option<u16>) -> String {
    match port {
        Some(port) if port != 22 => format!("[{host}]:{port}"),
        _ => host.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// github.com's published ed25519 key and fingerprint.
    const GITHUB_ED25519: &str =
        "AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";

    #[test]
    fn fingerprints_match_ssh_keygen() {
        assert_eq!(
            fingerprint(GITHUB_ED25519).as_deref(),
            Some("SHA256:+DiY3wvvV6TuJJhbpZisF/zLDA0zPMSvHdkr4UvCOqU")
        );
        assert_eq!(fingerprint("not base64!"), None);
    }

    #[test]
    fn keyscan_output_is_parsed() {
        let output = format!("# github.com:22 SSH-2.0-babeld\ngithub.com ssh-ed25519 {GITHUB_ED25519}\n[127.0.0.1]:2222 ssh-rsa %%%\n");
        let keys = parse_keyscan(&output);
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].key_type, "ssh-ed25519");
        assert_eq!(normalize(" SHA256:abc= \n"), "SHA256:abc");
        assert_eq!(known_hosts_name("h", Some(2222)), "[h]:2222");
        assert_eq!(known_hosts_name("h", Some(22)), "h");
    }
}
