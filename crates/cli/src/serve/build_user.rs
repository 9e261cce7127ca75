//! Who the builds of `serve --local` run as. As root, kubeci runs them as another user
//! (`--build-user`, by default `nobody`), so a build cannot read kubeci's token, database,
//! keys or `--secrets` directory; as any other user it cannot switch, and says so.

use anyhow::{bail, Context, Result};
use kubeci_pod_runner::RunAs;

/// The user `--build-user` names (a name, or `UID[:GID]`), or `nobody` when kubeci runs
/// as root and none is named; `None`: builds run as kubeci's own user.
pub(crate) fn build_user(flag: Option<&str>) -> Result<Option<RunAs>> {
    let me = nix::unistd::geteuid();
    let Some(wanted) = flag.or(me.is_root().then_some("nobody")) else {
        tracing::warn!(
            uid = me.as_raw(),
            "builds run as this user, as kubeci does: a build can read what kubeci can — its token, its database and the --secrets directory. Start kubeci as root (builds then run as `nobody`, or --build-user) to keep them apart"
        );
        return Ok(None);
    };
    let user = resolve(wanted)?;
    if user.uid == me.as_raw() {
        tracing::warn!(
            user = %user.name,
            "builds run as kubeci's own user: a build can read kubeci's token, database and --secrets directory"
        );
        return Ok(None);
    }
    if !me.is_root() {
        bail!(
            "--build-user {wanted}: kubeci runs as uid {me} and cannot start processes as another user; start it as root, or leave --build-user out"
        );
    }
    tracing::info!(
        user = %user.name,
        uid = user.uid,
        gid = user.gid,
        "builds run as another user: kubeci's token, database and --secrets are not theirs to read"
    );
    Ok(Some(user))
}

/// `name`, or `UID[:GID]` (the group: the user's own, else the UID), as a user.
fn resolve(wanted: &str) -> Result<RunAs> {
    let numeric = |s: &str| s.parse::<u32>().ok();
    let (user_part, group_part) = match wanted.split_once(':') {
        Some((user, group)) => (user, Some(group)),
        None => (wanted, None),
    };
    let found = match numeric(user_part) {
        Some(uid) => nix::unistd::User::from_uid(uid.into()),
        None => nix::unistd::User::from_name(user_part),
    }
    .with_context(|| format!("--build-user {wanted}: cannot look the user up"))?;
    let (uid, gid, name) = match (found, numeric(user_part)) {
        (Some(user), _) => (user.uid.as_raw(), user.gid.as_raw(), user.name),
        (None, Some(uid)) => (uid, uid, uid.to_string()),
        (None, None) => bail!(
            "--build-user {wanted}: no such user on this machine; name one (`useradd --system kubeci-build`) or give UID:GID"
        ),
    };
    let gid = match group_part {
        None => gid,
        Some(group) => numeric(group).with_context(|| {
            format!("--build-user {wanted}: the group after `:` must be a number")
        })?,
    };
    Ok(RunAs { uid, gid, name })
}

#[cfg(test)]
mod tests {
    use super::resolve;

    #[test]
    fn a_build_user_is_a_name_or_numbers() {
        let root = resolve("root").unwrap();
        assert_eq!((root.uid, root.gid, root.name.as_str()), (0, 0, "root"));
        let numbers = resolve("4242:4343").unwrap();
        assert_eq!((numbers.uid, numbers.gid), (4242, 4343));
        assert_eq!(resolve("4242").unwrap().gid, 4242);
        let unknown = resolve("no-such-user-here").unwrap_err().to_string();
        assert!(
            unknown.contains("no such user on this machine"),
            "{unknown}"
        );
        assert!(resolve("4242:staff").is_err());
    }
}
