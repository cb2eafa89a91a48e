//! `agentd attach --container` against real podman containers (runc, a busybox image
//! imported from a local rootfs: no registry). Podman keeps its images, containers and
//! temporary files in this test's own directory (`CONTAINERS_CONF`,
//! `CONTAINERS_STORAGE_CONF`), puts each container's cgroups beneath a parent named
//! after this test under its own v1 memory cgroup (`--cgroup-parent`, cgroupfs manager),
//! and shares the host's network (`--network host`: loopback is the host's, and no
//! bridge or firewall rules are made). Every container, the image and the parent
//! cgroups are removed at the end.
//!
//! Where podman, runc or a static busybox is missing, or a container cannot start, the
//! test skips loudly with the reason; `AGENTD_EXPECT_PODMAN=1` makes that a failure.
//! The Docker test starts a Docker engine of its own (`Dockerd`: socket, data and exec
//! roots in a temporary directory, no bridge or firewall rules, the same cgroup
//! placement); `AGENTD_EXPECT_DOCKER=1` makes its absence a failure.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use integration::daemon::TestDaemon;
use integration::*;
use serde_json::Value;

/// Podman with its own storage, configuration and cgroup parent.
struct Podman {
    dir: tempfile::TempDir,
    image: String,
    /// The `--cgroup-parent`, relative to each hierarchy's mount.
    parent: String,
    containers: Vec<String>,
}

/// Runs `cmd` (`tool args…`, stdin closed): its trimmed stdout, or an error naming the
/// command, its status and its stderr.
fn ok(cmd: &mut Command, tool: &str, args: &[&str]) -> Result<String, String> {
    let o = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{tool} {}: {e}", args.join(" ")))?;
    if o.status.success() {
        Ok(stdout(&o).trim().to_owned())
    } else {
        Err(format!(
            "{tool} {} failed ({:?}): {}",
            args.join(" "),
            o.status,
            stderr(&o).trim()
        ))
    }
}

impl Podman {
    /// A podman set up for this test, or why it cannot be.
    fn new() -> Result<Self, String> {
        for (tool, arg) in [("podman", "--version"), ("runc", "--version")] {
            match Command::new(tool).arg(arg).output() {
                Ok(o) if o.status.success() => {}
                Ok(o) => return Err(format!("`{tool} {arg}` failed: {}", stderr(&o))),
                Err(e) => return Err(format!("{tool}: {e} (install podman and runc)")),
            }
        }
        let busybox = Path::new("/bin/busybox");
        let linked = Command::new("ldd").arg(busybox).output();
        if !busybox.exists() || linked.is_ok_and(|o| o.status.success()) {
            return Err("/bin/busybox is missing or not static (install busybox-static)".into());
        }
        let dir = tempfile::Builder::new()
            .prefix("agentd-podman-it-")
            .tempdir()
            .map_err(|e| format!("tempdir: {e}"))?;
        let d = dir.path();
        // crun refuses hybrid cgroups; the default ulimits need CAP_SYS_RESOURCE.
        let conf = format!(
            "[containers]\ndefault_ulimits = [\"nofile=20000:20000\", \"nproc=32768:32768\"]\n\
             [engine]\nruntime = \"runc\"\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n\
             tmp_dir = \"{tmp}\"\n",
            tmp = d.join("tmp").display()
        );
        let storage = format!(
            "[storage]\ndriver = \"vfs\"\ngraphroot = \"{}\"\nrunroot = \"{}\"\n",
            d.join("graph").display(),
            d.join("run").display()
        );
        let write = |name: &str, text: &str| {
            std::fs::write(d.join(name), text).map_err(|e| format!("write {name}: {e}"))
        };
        write("containers.conf", &conf)?;
        write("storage.conf", &storage)?;
        let memory = std::fs::read_to_string("/proc/self/cgroup")
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.split_once(":memory:").map(|(_, p)| p.trim().to_owned()))
            .ok_or("this test has no v1 memory cgroup to put the containers beneath")?;
        // Tests of this file run at once: each podman gets its own cgroup parent.
        static INSTANCE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = INSTANCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let parent = format!(
            "{}/agentd-podman-it-{}-{n}",
            memory.trim_end_matches('/'),
            std::process::id()
        );
        let tag = format!("localhost/agentd-busybox-it-{}", std::process::id());
        let p = Self {
            dir,
            image: tag,
            parent,
            containers: Vec::new(),
        };
        p.import_busybox()?;
        Ok(p)
    }

    fn command(&self) -> Command {
        let mut c = Command::new("podman");
        self.env(&mut c);
        c
    }

    /// Points `c` (podman, or the agentd client that runs `podman inspect`) at this
    /// test's podman.
    fn env(&self, c: &mut Command) {
        c.env("CONTAINERS_CONF", self.dir.path().join("containers.conf"))
            .env(
                "CONTAINERS_STORAGE_CONF",
                self.dir.path().join("storage.conf"),
            );
    }

    fn podman(&self, args: &[&str]) -> Result<Output, String> {
        self.command()
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("podman {}: {e}", args.join(" ")))
    }

    fn ok(&self, args: &[&str]) -> Result<String, String> {
        ok(self.command().args(args), "podman", args)
    }

    /// A rootfs of /bin/busybox and its applets, imported as a local image.
    fn import_busybox(&self) -> Result<(), String> {
        let tar = busybox_rootfs_tar(self.dir.path())?;
        self.ok(&["import", &tar.display().to_string(), &self.image])
            .map(|_| ())
    }

    /// Starts a container that loops until stopped; its name.
    fn run(&mut self, tag: &str) -> Result<String, String> {
        let name = format!("agentd-it-{}-{tag}", std::process::id());
        self.containers.push(name.clone());
        self.ok(&[
            "run",
            "-d",
            "--name",
            &name,
            "--network",
            "host",
            "--cgroup-parent",
            &self.parent,
            &self.image,
            "/bin/sh",
            "-c",
            "while true; do sleep 1; done",
        ])?;
        Ok(name)
    }

    /// `nc` from inside container `name` to loopback `port`: its output and exit code.
    fn connect(&self, name: &str, port: u16) -> String {
        let script = format!("nc 127.0.0.1 {port} </dev/null 2>&1; echo rc=$?");
        match self.ok(&["exec", name, "/bin/sh", "-c", &script]) {
            Ok(out) => out,
            Err(e) => panic!("{e}"),
        }
    }

    fn running(&self, name: &str) -> bool {
        self.ok(&[
            "inspect",
            "--type",
            "container",
            "--format",
            "{{.State.Running}}",
            name,
        ])
        .is_ok_and(|s| s == "true")
    }

    /// The host path of the container's root filesystem.
    fn rootfs(&self, name: &str) -> String {
        self.ok(&["mount", name]).unwrap_or_else(|e| panic!("{e}"))
    }

    /// The container's own v2 cgroup, from its init's /proc/PID/cgroup.
    fn cgroup_of(&self, name: &str) -> String {
        let pid = self
            .ok(&[
                "inspect",
                "--type",
                "container",
                "--format",
                "{{.State.Pid}}",
                name,
            ])
            .unwrap_or_else(|e| panic!("{e}"));
        let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
        text.lines()
            .find_map(|l| l.strip_prefix("0::"))
            .unwrap_or_else(|| panic!("no v2 line: {text}"))
            .to_owned()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        for c in &self.containers {
            let _ = self.podman(&["rm", "-f", "-t", "0", c]);
        }
        let _ = self.podman(&["rmi", "-f", &self.image]);
        // The parent cgroups podman made in each hierarchy (with conmon's child), and
        // only those: rmdir removes nothing that still holds a process or a child.
        if let Ok(mounts) = std::fs::read_dir("/sys/fs/cgroup") {
            for m in mounts.flatten() {
                let parent = m.path().join(self.parent.trim_start_matches('/'));
                if parent.is_dir() {
                    let _ = std::fs::remove_dir(parent.join("conmon"));
                    let _ = std::fs::remove_dir(&parent);
                }
            }
        }
        // The image's vfs layers are plain directories in the tempdir, removed with it.
    }
}

/// A tarball of a rootfs holding /bin/busybox and links for its applets, in `dir`.
fn busybox_rootfs_tar(dir: &Path) -> Result<std::path::PathBuf, String> {
    let root = dir.join("rootfs");
    let bin = root.join("bin");
    std::fs::create_dir_all(&bin).map_err(|e| format!("mkdir: {e}"))?;
    std::fs::copy("/bin/busybox", bin.join("busybox")).map_err(|e| format!("copy: {e}"))?;
    let list = Command::new("/bin/busybox")
        .arg("--list")
        .output()
        .map_err(|e| format!("busybox --list: {e}"))?;
    for applet in stdout(&list)
        .lines()
        .filter(|a| !a.is_empty() && *a != "busybox")
    {
        let _ = std::os::unix::fs::symlink("busybox", bin.join(applet));
    }
    let tar = dir.join("rootfs.tar");
    let o = Command::new("tar")
        .arg("-C")
        .arg(&root)
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .output()
        .map_err(|e| format!("tar: {e}"))?;
    if !o.status.success() {
        return Err(format!("tar: {}", stderr(&o)));
    }
    Ok(tar)
}

/// Says loudly why the test cannot run here (a failure where CI pins podman).
fn skip(why: &str) {
    assert!(
        expect("AGENTD_EXPECT_PODMAN").as_deref() != Some("1"),
        "AGENTD_EXPECT_PODMAN=1 but podman cannot run containers here: {why}"
    );
    eprintln!("SKIP: podman containers: {why}");
}

/// The test's podman with two looping containers, or `None` after saying why not.
fn podman_or_skip() -> Option<(Podman, String, String)> {
    require_root();
    let mut pm = Podman::new().map_err(|why| skip(&why)).ok()?;
    let a = pm.run("a").map_err(|why| skip(&why)).ok()?;
    let b = pm.run("b").map_err(|why| skip(&why)).ok()?;
    Some((pm, a, b))
}

/// A loopback listener that accepts and closes every connection, on its own thread.
fn acceptor() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind: {e}"));
    let port = l.local_addr().map(|a| a.port()).unwrap_or(0);
    std::thread::spawn(move || {
        for conn in l.incoming() {
            drop(conn);
        }
    });
    port
}

fn attach(d: &TestDaemon, pm: &Podman, args: &[&str]) -> Output {
    let mut c = d.client();
    pm.env(&mut c);
    c.arg("attach")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("agentd attach: {e}"))
}

const EPERM: &str = "nc: can't connect to remote host (127.0.0.1): Operation not permitted\nrc=1";

#[test]
fn an_attached_podman_container_is_confined_audited_and_ends_with_its_container() {
    let Some((pm, a, b)) = podman_or_skip() else {
        return;
    };
    let open = acceptor();
    let closed = acceptor();
    assert_eq!(pm.connect(&a, closed), "rc=0", "before attach");

    let mut d = TestDaemon::start(&format!("aitg-none-{}", std::process::id()));
    // Exec integrity holds on the container by inode: its busybox (every applet is a
    // link to it) is the one program it may run.
    let policy = d.policy(
        "container.yaml",
        &format!(
            "version: 1\nname: container-it\nexec:\n  allow: [\"{root}/bin/busybox\"]\n\
             net:\n  allow: [\"127.0.0.1:{open}/tcp\"]\n\
             attach:\n  best_effort: [fs, syscalls, caps]\n",
            root = pm.rootfs(&a),
        ),
    );
    let policy = policy.display().to_string();
    // A process `podman exec` left running is not in the init's tree, but it is in the
    // container's own cgroup: attach takes it without --force.
    pm.ok(&["exec", "-d", &a, "/bin/sleep", "300"])
        .unwrap_or_else(|e| panic!("{e}"));
    let o = attach(
        &d,
        &pm,
        &[
            "--container",
            &a,
            "--runtime",
            "podman",
            "--policy",
            &policy,
        ],
    );
    assert_status(&o, 0);
    let run = stdout(&o).trim().to_owned();

    // Its connects are confined by the policy; the other container's are not.
    assert_eq!(pm.connect(&a, closed), EPERM);
    assert_eq!(pm.connect(&a, open), "rc=0");
    assert_eq!(pm.connect(&b, closed), "rc=0", "a container not attached");

    let row = d.ps_row(&run);
    assert_eq!(row["attached"], format!("container:{a}"));

    let recs = d.audit();
    let att = records(&recs, &run, "attach");
    assert_eq!(att.len(), 1, "{recs:#?}");
    assert_eq!(att[0]["target"], format!("container:{a}"));
    assert_eq!(att[0]["forced"], false);
    assert!(
        att[0]["processes"].as_u64().is_some_and(|n| n >= 2),
        "{}",
        att[0]
    );
    assert_eq!(
        att[0]["cgroup"],
        format!("/sys/fs/cgroup/unified{}", pm.cgroup_of(&a))
    );
    let denied: Vec<&Value> = records(&recs, &run, "denied")
        .into_iter()
        .filter(|r| r["op"] == "connect")
        .collect();
    assert_eq!(denied.len(), 1, "{denied:#?}");
    assert_eq!(denied[0]["port"], closed);
    assert_eq!(denied[0]["errno"], "EPERM");
    // What `podman exec` started in it is audited by the exec tracker: the shell of
    // each of the two connects it made while attached, and nc, which busybox's shell
    // runs by exec'ing /proc/self/exe (busybox again, so exec.allow lets it run). The
    // file is named as the container names it (or, once the process is gone, as it
    // was exec'd), never as the host's /bin/sh.
    let execs: Vec<&Value> = records(&recs, &run, "exec");
    let shells: Vec<&&Value> = execs
        .iter()
        .filter(|r| r["filename"] == "/bin/sh")
        .collect();
    assert_eq!(shells.len(), 2, "{execs:#?}");
    for sh in &shells {
        assert!(
            sh["path"] == "/bin/busybox" || sh["path"] == "/bin/sh",
            "{sh:#?}"
        );
        let nc: Vec<&&Value> = execs
            .iter()
            .filter(|r| r["ppid"] == sh["pid"] && r["filename"] == "/proc/self/exe")
            .collect();
        assert_eq!(nc.len(), 1, "the nc of {sh:#?} in {execs:#?}");
    }

    // A daemon crash: the restarted daemon re-adopts the run; the container stays
    // confined and listed.
    d.restart();
    assert_eq!(pm.connect(&a, closed), EPERM, "after the daemon's restart");
    let row = d.ps_row(&run);
    assert_eq!(row["adopted"], true);
    assert_eq!(row["attached"], format!("container:{a}"));

    // Detach: the container runs on, unconfined.
    d.detach(&run);
    wait_for("the run's end", Duration::from_secs(10), || {
        !records(&d.audit(), &run, "run_end").is_empty()
    });
    assert!(pm.running(&a), "detach leaves the container running");
    assert_eq!(pm.connect(&a, closed), "rc=0", "after detach");

    // Attach again, the runtime found by `auto`; the container's stop ends the run.
    let o = attach(&d, &pm, &["--container", &a, "--policy", &policy]);
    assert_status(&o, 0);
    let run = stdout(&o).trim().to_owned();
    assert_eq!(pm.connect(&a, closed), EPERM);
    pm.ok(&["stop", "-t", "0", &a])
        .unwrap_or_else(|e| panic!("{e}"));
    wait_for("the run's end", Duration::from_secs(15), || {
        !records(&d.audit(), &run, "run_end").is_empty()
    });
    let recs = d.audit();
    let end = records(&recs, &run, "run_end");
    assert_eq!(end.len(), 1);
    assert_eq!(end[0]["status"], 0, "{end:#?}");
    assert_eq!(end[0]["stragglers_killed"], 0, "{end:#?}");
    wait_for("the run to leave ps", Duration::from_secs(5), || {
        d.ps().iter().all(|r| r["run"] != run.as_str())
    });
    assert!(pm.running(&b), "the other container is untouched");

    // An exec budget holds on a container, and its kill step kills the container.
    let budget = d.policy(
        "container-execs.yaml",
        &format!(
            "version: 1\nname: container-execs\nexec:\n  allow: [\"{root}/bin/busybox\"]\n\
             attach:\n  best_effort: [fs, syscalls, caps]\nbudgets:\n  execs: 3\n",
            root = pm.rootfs(&b),
        ),
    );
    let o = attach(
        &d,
        &pm,
        &["--container", &b, "--policy", &budget.display().to_string()],
    );
    assert_status(&o, 0);
    let run = stdout(&o).trim().to_owned();
    for _ in 0..6 {
        let _ = pm.podman(&["exec", &b, "/bin/true"]);
    }
    wait_for("the run's end", Duration::from_secs(15), || {
        !records(&d.audit(), &run, "run_end").is_empty()
    });
    let recs = d.audit();
    let end = records(&recs, &run, "run_end");
    assert_eq!(end[0]["killed_by"], "execs", "{end:#?}");
    wait_for("the container's end", Duration::from_secs(15), || {
        !pm.running(&b)
    });
}

/// The net egress byte budget holds inside a container: `podman exec` streams zeros to a
/// loopback listener, the container's egress past the limit is dropped in the kernel,
/// and the budget's kill step ends the run and the container.
#[test]
fn a_net_egress_budget_kills_an_attached_container_at_its_limit() {
    require_root();
    let mut pm = match Podman::new() {
        Ok(pm) => pm,
        Err(why) => return skip(&why),
    };
    let c = match pm.run("net") {
        Ok(c) => c,
        Err(why) => return skip(&why),
    };
    let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind: {e}"));
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    let reader = std::thread::spawn(move || {
        use std::io::Read;
        let Ok((mut conn, _)) = listener.accept() else {
            return 0usize;
        };
        let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
        let mut buf = vec![0u8; 1 << 16];
        let mut total = 0usize;
        while let Ok(n) = conn.read(&mut buf) {
            if n == 0 {
                break;
            }
            total += n;
        }
        total
    });
    let d = TestDaemon::start(&format!("aitg-net-{}", std::process::id()));
    let policy = d.policy(
        "container-net.yaml",
        &format!(
            "version: 1\nname: container-net\nexec:\n  allow: [\"{root}/bin/busybox\"]\n\
             net:\n  allow: [\"127.0.0.1:{port}/tcp\"]\n\
             attach:\n  best_effort: [fs, syscalls, caps]\n\
             budgets:\n  net_egress_bytes: 1MiB\n",
            root = pm.rootfs(&c),
        ),
    );
    let o = attach(
        &d,
        &pm,
        &["--container", &c, "--policy", &policy.display().to_string()],
    );
    assert_status(&o, 0);
    let run = stdout(&o).trim().to_owned();
    // 16 MiB: more than the socket buffers can hold, so nc blocks unless it is killed.
    let script = format!("head -c 16777216 /dev/zero | nc 127.0.0.1 {port}; echo rc=$?");
    let mut exec = pm.command();
    exec.args(["exec", &c, "/bin/sh", "-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = exec.spawn().unwrap_or_else(|e| panic!("podman exec: {e}"));
    wait_for("the run's end", Duration::from_secs(30), || {
        !records(&d.audit(), &run, "run_end").is_empty()
    });
    let out = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("podman exec: {e}"));
    assert!(!stdout(&out).contains("rc=0"), "{}", stdout(&out));
    let received = reader.join().unwrap_or_else(|_| panic!("reader panicked"));
    assert!(
        received > 0 && received <= (1 << 20) + (64 << 10),
        "received {received}; {:#?}",
        records(&d.audit(), &run, "budget")
    );
    let recs = d.audit();
    let kill: Vec<&Value> = records(&recs, &run, "budget")
        .into_iter()
        .filter(|r| r["budget"] == "net_egress_bytes" && r["action"] == "kill")
        .collect();
    assert_eq!(kill.len(), 1, "{recs:#?}");
    assert_eq!(kill[0]["limit"], 1 << 20);
    let end = records(&recs, &run, "run_end");
    assert_eq!(end[0]["killed_by"], "net_egress_bytes", "{end:#?}");
    // nc's connection, orphaned by the kill with data still queued, is aborted while the
    // kernel still drops the run's data (its reset leaves; the queue never does).
    let abort: Vec<&Value> = records(&recs, &run, "budget")
        .into_iter()
        .filter(|r| r["action"] == "abort_sockets")
        .collect();
    assert_eq!(abort.len(), 1, "{recs:#?}");
    assert_eq!(abort[0]["tcp_sockets_aborted"], 1, "{recs:#?}");
    wait_for("the container's end", Duration::from_secs(15), || {
        !pm.running(&c)
    });
}

/// A Docker engine of this test's own: `dockerd` with its socket, data and exec roots in
/// a temporary directory, no bridge, firewall or forwarding changes (containers use the
/// host's network), the cgroupfs driver with every container's cgroups beneath a parent
/// under this test's own v1 memory cgroup. Stopped (SIGTERM, which stops the containerd
/// it started too) and its cgroups removed on drop.
struct Dockerd {
    dir: tempfile::TempDir,
    child: std::process::Child,
    parent: String,
}

impl Dockerd {
    fn start() -> Result<Self, String> {
        match Command::new("dockerd").arg("--version").output() {
            Ok(o) if o.status.success() => {}
            Ok(o) => return Err(format!("`dockerd --version` failed: {}", stderr(&o))),
            Err(e) => return Err(format!("dockerd: {e} (install docker.io)")),
        }
        let memory = std::fs::read_to_string("/proc/self/cgroup")
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.split_once(":memory:").map(|(_, p)| p.trim().to_owned()))
            .ok_or("this test has no v1 memory cgroup to put the containers beneath")?;
        let parent = format!(
            "{}/agentd-docker-it-{}",
            memory.trim_end_matches('/'),
            std::process::id()
        );
        // Short: containerd's sockets live below the exec root.
        let dir = tempfile::Builder::new()
            .prefix("agentd-dk-")
            .tempdir_in("/tmp")
            .map_err(|e| format!("tempdir: {e}"))?;
        let d = dir.path();
        let log = std::fs::File::create(d.join("dockerd.log")).map_err(|e| format!("log: {e}"))?;
        let err = log.try_clone().map_err(|e| format!("log: {e}"))?;
        let child = Command::new("dockerd")
            .arg("--host")
            .arg(format!("unix://{}", d.join("docker.sock").display()))
            .arg("--data-root")
            .arg(d.join("root"))
            .arg("--exec-root")
            .arg(d.join("exec"))
            .arg("--pidfile")
            .arg(d.join("docker.pid"))
            .args([
                "--bridge=none",
                "--iptables=false",
                "--ip6tables=false",
                "--ip-forward=false",
                "--ip-masq=false",
                "--userland-proxy=false",
                "--storage-driver=vfs",
                "--exec-opt",
                "native.cgroupdriver=cgroupfs",
                "--containerd-namespace",
                "agentd-it",
            ])
            .arg(format!("--cgroup-parent={parent}"))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("dockerd: {e}"))?;
        let engine = Self { dir, child, parent };
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            match engine.docker(&["info", "--format", "{{.ServerVersion}}"]) {
                Ok(_) => return Ok(engine),
                Err(why) if std::time::Instant::now() > deadline => {
                    let log = std::fs::read_to_string(engine.dir.path().join("dockerd.log"))
                        .unwrap_or_default();
                    let tail: Vec<&str> = log.lines().rev().take(5).collect();
                    return Err(format!(
                        "dockerd did not answer in 60 s: {why}; log: {tail:?}"
                    ));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }

    /// Points `c` (docker, or the agentd client that runs `docker inspect`) at it.
    fn env(&self, c: &mut Command) {
        c.env(
            "DOCKER_HOST",
            format!("unix://{}", self.dir.path().join("docker.sock").display()),
        );
    }

    fn docker(&self, args: &[&str]) -> Result<String, String> {
        let mut c = Command::new("docker");
        self.env(&mut c);
        ok(c.args(args), "docker", args)
    }

    /// The host path of container `name`'s root filesystem: the vfs layer directory whose
    /// `bin/busybox` is the inode the container's init sees as its own.
    fn rootfs(&self, name: &str) -> String {
        use std::os::unix::fs::MetadataExt;
        let pid = self
            .docker(&["inspect", "--format", "{{.State.Pid}}", name])
            .unwrap_or_else(|e| panic!("{e}"));
        let theirs = std::fs::metadata(format!("/proc/{pid}/root/bin/busybox"))
            .unwrap_or_else(|e| panic!("the container's busybox: {e}"));
        let layers = self.dir.path().join("root/vfs/dir");
        std::fs::read_dir(&layers)
            .unwrap_or_else(|e| panic!("{}: {e}", layers.display()))
            .flatten()
            .map(|l| l.path())
            .find(|l| {
                std::fs::metadata(l.join("bin/busybox"))
                    .is_ok_and(|m| m.dev() == theirs.dev() && m.ino() == theirs.ino())
            })
            .unwrap_or_else(|| panic!("no vfs layer of {} holds its busybox", name))
            .display()
            .to_string()
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        // Its containers first, so that nothing of theirs outlives the engine.
        if let Ok(ids) = self.docker(&["ps", "-aq"]) {
            for id in ids.lines() {
                let _ = self.docker(&["rm", "-f", id]);
            }
        }
        // SAFETY: kill(2) of the dockerd this test started, by its pid.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while matches!(self.child.try_wait(), Ok(None)) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // dockerd binds the host's network namespace here and leaves it at exit.
        let netns = std::ffi::CString::new(
            self.dir
                .path()
                .join("exec/netns/default")
                .display()
                .to_string(),
        )
        .unwrap_or_default();
        // SAFETY: umount2 of a NUL-terminated path below this test's own directory.
        unsafe { libc::umount2(netns.as_ptr(), libc::MNT_DETACH) };
        if let Ok(mounts) = std::fs::read_dir("/sys/fs/cgroup") {
            for m in mounts.flatten() {
                let _ = std::fs::remove_dir(m.path().join(self.parent.trim_start_matches('/')));
            }
        }
    }
}

/// Docker is the same code path as podman, resolved through `docker inspect`, here
/// against a Docker engine the test starts itself. Where none can start, the test skips
/// loudly with the reason, and `AGENTD_EXPECT_DOCKER=1` makes that a failure.
#[test]
fn an_attached_docker_container_is_confined() {
    require_root();
    let engine = match Dockerd::start() {
        Ok(e) => e,
        Err(why) => {
            assert!(
                expect("AGENTD_EXPECT_DOCKER").as_deref() != Some("1"),
                "AGENTD_EXPECT_DOCKER=1 but no Docker engine can run here: {why}"
            );
            eprintln!("SKIP: docker containers: {why}");
            return;
        }
    };
    let docker = |args: &[&str]| engine.docker(args);
    let dir = tempfile::Builder::new()
        .prefix("agentd-docker-it-")
        .tempdir()
        .unwrap_or_else(|e| panic!("tempdir: {e}"));
    let tar = busybox_rootfs_tar(dir.path()).unwrap_or_else(|e| panic!("{e}"));
    let image = format!("agentd-busybox-it-{}", std::process::id());
    let name = format!("agentd-it-{}-docker", std::process::id());
    docker(&["import", &tar.display().to_string(), &image]).unwrap_or_else(|e| panic!("{e}"));
    docker(&[
        "run",
        "-d",
        "--name",
        &name,
        "--network",
        "host",
        &image,
        "/bin/sh",
        "-c",
        "while true; do sleep 1; done",
    ])
    .unwrap_or_else(|e| panic!("{e}"));
    let open = acceptor();
    let closed = acceptor();
    let connect = |port: u16| {
        let script = format!("nc 127.0.0.1 {port} </dev/null 2>&1; echo rc=$?");
        docker(&["exec", &name, "/bin/sh", "-c", &script]).unwrap_or_else(|e| panic!("{e}"))
    };
    assert_eq!(connect(closed), "rc=0", "before attach");
    let d = TestDaemon::start(&format!("aitg-dock-{}", std::process::id()));
    // As for podman: the container's busybox (every applet links to it) may run.
    let policy = d.policy(
        "docker.yaml",
        &format!(
            "version: 1\nname: docker-it\nexec:\n  allow: [\"{root}/bin/busybox\"]\n\
             net:\n  allow: [\"127.0.0.1:{open}/tcp\"]\n\
             attach:\n  best_effort: [fs, syscalls, caps]\n",
            root = engine.rootfs(&name),
        ),
    );
    let mut client = d.client();
    engine.env(&mut client);
    let o = client
        .args([
            "attach",
            "--container",
            &name,
            "--runtime",
            "docker",
            "--policy",
        ])
        .arg(&policy)
        .output()
        .unwrap_or_else(|e| panic!("agentd attach: {e}"));
    assert_status(&o, 0);
    let run = stdout(&o).trim().to_owned();
    assert_eq!(connect(closed), EPERM);
    assert_eq!(connect(open), "rc=0");
    assert_eq!(d.ps_row(&run)["attached"], format!("container:{name}"));
    let recs = d.audit();
    let denied: Vec<&Value> = records(&recs, &run, "denied")
        .into_iter()
        .filter(|r| r["op"] == "connect")
        .collect();
    assert_eq!(denied.len(), 1, "{denied:#?}");
    assert_eq!(denied[0]["port"], closed);
    d.detach(&run);
    wait_for("the run's end", Duration::from_secs(10), || {
        !records(&d.audit(), &run, "run_end").is_empty()
    });
    assert_eq!(connect(closed), "rc=0", "after detach");
}
