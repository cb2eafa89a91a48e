//! Whom the agent runs as: never uid 0 by accident.

use integration::*;

/// As root without SUDO_UID or --user, agentd refuses to start the command (exit 125)
/// and names --user.
#[test]
fn a_root_run_without_a_user_is_refused_naming_the_flag() {
    let sb = Sandbox::new();
    sb.base_policy(&[]);
    let o = sb
        .run_cmd(&[&testprog().display().to_string(), "ids"])
        .env_remove("AGENTD_USER")
        .env_remove("SUDO_UID")
        .env_remove("SUDO_GID")
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_status(&o, 125);
    assert_eq!(stdout(&o), "", "the command never ran");
    let err = stderr(&o);
    assert!(
        err.contains("agentd: user: refusing to run the agent as root: pass --user USER"),
        "{err}"
    );
    assert!(
        !sb.audit_path().exists(),
        "nothing started, so nothing was logged"
    );
}

/// Under sudo (SUDO_UID/SUDO_GID), the agent runs as the user who ran sudo, and
/// run_start records its uid and gid.
#[test]
fn under_sudo_the_agent_runs_as_the_sudo_user() {
    let user = TestUser::create("sudo", &[]);
    let sb = Sandbox::new();
    sb.base_policy(&[]);
    let o = sb
        .run_cmd(&[&testprog().display().to_string(), "ids"])
        .env_remove("AGENTD_USER")
        .env("SUDO_UID", user.uid.to_string())
        .env("SUDO_GID", user.gid.to_string())
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_status(&o, 0);
    assert_eq!(
        stdout(&o),
        format!("uid {0} gid {1} groups {1}\n", user.uid, user.gid)
    );
    let recs = sb.audit();
    let start = events(&recs, "run_start")[0];
    assert_eq!(start["uid"], user.uid);
    assert_eq!(start["gid"], user.gid);
    assert_eq!(start["user"], user.name.as_str());
}

/// `--user NAME` (by name) and `--user UID:GID` (by number) both switch; `--user root`
/// is the explicit way to run as root.
#[test]
fn user_flag_by_name_number_and_root() {
    let user = TestUser::create("flag", &[]);
    let sb = Sandbox::new();
    sb.base_policy(&[]);
    let prog = testprog().display().to_string();
    for (flag, expect) in [
        (
            user.name.clone(),
            format!("uid {0} gid {1} groups {1}\n", user.uid, user.gid),
        ),
        (
            format!("{}:{}", user.uid, user.gid),
            format!("uid {0} gid {1} groups {1}\n", user.uid, user.gid),
        ),
        ("root".to_owned(), "uid 0 gid 0 groups 0\n".to_owned()),
    ] {
        let o = sb
            .run_cmd(&[&prog, "ids"])
            .env("AGENTD_USER", &flag)
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        assert_status(&o, 0);
        assert_eq!(stdout(&o), expect, "--user {flag}");
    }
    let o = sb
        .run_cmd(&[&prog, "ids"])
        .env("AGENTD_USER", "no-such-user-agentd-it")
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_status(&o, 125);
    assert!(
        stderr(&o).contains("agentd: user: --user no-such-user-agentd-it: no such user"),
        "{}",
        stderr(&o)
    );
}
