//! A private RabbitMQ node for tests that need a broker of their own (a TLS listener, a restart, an
//! alarm): its own node name, ports, data and log directories, config file, enabled-plugins file and
//! Erlang cookie, all under one temporary directory. The shared broker on 5672 is never touched.
//!
//! The node runs as the `rabbitmq` user when the tests run as root and that user exists (as the
//! Debian package sets it up), else as the current user. `rabbitmq-server -detached` starts it and
//! `rabbitmqctl wait` waits for it; the CLI and the node share the cookie through `HOME`.
//!
//! Stopping: dropping a [`PrivateNode`] stops it (`rabbitmqctl stop`, then SIGKILL if that fails)
//! and removes its directory. A node kept in a `static` is never dropped, so every node also gets a
//! watchdog process that does the same as soon as the test process has exited, however it exited.

#![allow(dead_code)]

pub mod pki;

use std::{
    fs,
    net::TcpListener,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

/// Directory of the scripts that bypass Debian's wrappers (which `su` to rabbitmq and reset `HOME`).
const DEBIAN_BIN: &str = "/usr/lib/rabbitmq/bin";
/// How long a node may take to boot.
const START_TIMEOUT: Duration = Duration::from_secs(90);
/// How long one `rabbitmqctl` command may take.
const CTL_TIMEOUT: Duration = Duration::from_secs(60);

/// What a node is started with.
#[derive(Debug, Clone, Default)]
pub struct NodeSpec {
    /// Short name, part of the node name (`coney-{label}-{pid}-{n}@localhost`).
    pub label: &'static str,
    /// Plugins to enable (written to the node's own enabled-plugins file).
    pub plugins: Vec<&'static str>,
    /// Extra `rabbitmq.conf` lines. `{dir}` is replaced by the node's directory and `{amqps_port}` by
    /// its TLS port.
    pub config: Vec<String>,
    /// Whether to open a TLS listener (configure its `ssl_options.*` in `config`).
    pub tls_listener: bool,
}

/// A running private node. Dropping it stops the node and removes its directory.
#[derive(Debug)]
pub struct PrivateNode {
    /// Erlang node name, `coney-...@localhost`.
    pub name: String,
    /// Plain AMQP port (on 127.0.0.1).
    pub amqp_port: u16,
    /// TLS port (on 127.0.0.1), if the spec asked for a TLS listener.
    pub amqps_port: Option<u16>,
    /// The node's directory: config, data, logs, cookie, and whatever the spec's `prepare` put there.
    pub dir: PathBuf,
    env: Vec<(String, String)>,
    run_as: Option<&'static str>,
    watchdog: Option<Child>,
    stopped: bool,
}

impl PrivateNode {
    /// Starts a node and waits until it is booted. `prepare` runs first with the node's (empty)
    /// directory, to put files there (certificates) that the config refers to.
    ///
    /// Panics with the end of the node's log if it does not boot within 90 s. Ports are picked at
    /// random below the ephemeral range and checked free; a start that still loses a race for a port
    /// is retried with new ones.
    pub fn start(spec: &NodeSpec, prepare: impl Fn(&Path)) -> PrivateNode {
        let mut last_error = String::new();
        for _ in 0..3 {
            match PrivateNode::try_start(spec, &prepare) {
                Ok(node) => return node,
                Err(e) => {
                    eprintln!("private node did not start, retrying with new ports: {e}");
                    last_error = e;
                }
            }
        }
        panic!("private RabbitMQ node did not start: {last_error}");
    }

    fn try_start(spec: &NodeSpec, prepare: &dyn Fn(&Path)) -> Result<PrivateNode, String> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let short = format!("coney-{}-{pid}-{n}", spec.label);
        let name = format!("{short}@localhost");
        let dir = std::env::temp_dir().join(&short);
        let _ = fs::remove_dir_all(&dir);
        for sub in ["", "home", "mnesia", "log"] {
            fs::create_dir_all(dir.join(sub)).map_err(|e| format!("creating {dir:?}: {e}"))?;
        }
        prepare(&dir);

        let ports = free_ports(if spec.tls_listener { 3 } else { 2 });
        let (amqp_port, dist_port) = (ports[0], ports[1]);
        let amqps_port = spec.tls_listener.then(|| ports[2]);

        let mut config = vec!["loopback_users = none".to_owned()];
        if let Some(port) = amqps_port {
            config.push(format!("listeners.ssl.default = 127.0.0.1:{port}"));
        }
        for line in &spec.config {
            let line = line.replace("{dir}", &dir.display().to_string());
            config.push(match amqps_port {
                Some(port) => line.replace("{amqps_port}", &port.to_string()),
                None => line,
            });
        }
        write(&dir.join("rabbitmq.conf"), &(config.join("\n") + "\n"))?;
        write(
            &dir.join("enabled_plugins"),
            &format!("[{}].\n", spec.plugins.join(",")),
        )?;
        // An empty env file: the system's /etc/rabbitmq/rabbitmq-env.conf names the shared node.
        write(&dir.join("rabbitmq-env.conf"), "")?;
        let cookie_path = dir.join("home/.erlang.cookie");
        write(&cookie_path, &cookie())?;
        set_mode(&cookie_path, 0o400)?;

        let run_as = run_as();
        if let Some(user) = run_as {
            let status = Command::new("chown")
                .args(["-R", &format!("{user}:{user}")])
                .arg(&dir)
                .status()
                .map_err(|e| format!("chown: {e}"))?;
            if !status.success() {
                return Err(format!("chown -R {user} {dir:?} failed"));
            }
        }

        let path = |p: &str| dir.join(p).display().to_string();
        let env = vec![
            ("HOME".to_owned(), path("home")),
            ("RABBITMQ_NODENAME".to_owned(), name.clone()),
            (
                "RABBITMQ_NODE_IP_ADDRESS".to_owned(),
                "127.0.0.1".to_owned(),
            ),
            ("RABBITMQ_NODE_PORT".to_owned(), amqp_port.to_string()),
            ("RABBITMQ_DIST_PORT".to_owned(), dist_port.to_string()),
            ("RABBITMQ_MNESIA_BASE".to_owned(), path("mnesia")),
            ("RABBITMQ_LOG_BASE".to_owned(), path("log")),
            ("RABBITMQ_CONFIG_FILE".to_owned(), path("rabbitmq.conf")),
            (
                "RABBITMQ_ADVANCED_CONFIG_FILE".to_owned(),
                path("advanced.config"),
            ),
            (
                "RABBITMQ_CONF_ENV_FILE".to_owned(),
                path("rabbitmq-env.conf"),
            ),
            (
                "RABBITMQ_ENABLED_PLUGINS_FILE".to_owned(),
                path("enabled_plugins"),
            ),
            ("RABBITMQ_PID_FILE".to_owned(), path("node.pid")),
            (
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS".to_owned(),
                "-kernel inet_dist_use_interface {127,0,0,1}".to_owned(),
            ),
            ("ERL_EPMD_ADDRESS".to_owned(), "127.0.0.1".to_owned()),
        ];
        let mut node = PrivateNode {
            name,
            amqp_port,
            amqps_port,
            dir,
            env,
            run_as,
            watchdog: None,
            stopped: false,
        };
        node.watchdog = node.spawn_watchdog();

        let started = Instant::now();
        let out = node
            .command("rabbitmq-server", &["-detached"], START_TIMEOUT)
            .output()
            .map_err(|e| format!("running rabbitmq-server: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "rabbitmq-server -detached failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let pid_file = node.dir.join("node.pid").display().to_string();
        let timeout = START_TIMEOUT.as_secs().to_string();
        let wait = node.try_ctl(&["wait", &pid_file, "--timeout", &timeout]);
        if let Err(e) = wait {
            // Dropping `node` stops and cleans up what did start.
            return Err(format!("{e}\n--- node log ---\n{}", node.log_tail(40)));
        }
        eprintln!(
            "private node {} up in {:.1?}: amqp {} amqps {:?}, dir {}",
            node.name,
            started.elapsed(),
            node.amqp_port,
            node.amqps_port,
            node.dir.display()
        );
        Ok(node)
    }

    /// `amqp://guest:guest@127.0.0.1:{amqp_port}/%2f`.
    pub fn amqp_url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.amqp_port)
    }

    /// `rabbitmqctl -n NODE args...`; panics if it fails.
    pub fn ctl(&self, args: &[&str]) -> String {
        self.try_ctl(args)
            .unwrap_or_else(|e| panic!("rabbitmqctl {args:?} on {}: {e}", self.name))
    }

    /// `rabbitmqctl -n NODE args...`: its standard output, or what went wrong.
    pub fn try_ctl(&self, args: &[&str]) -> Result<String, String> {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        let out = self
            .command("rabbitmqctl", &full, CTL_TIMEOUT)
            .output()
            .map_err(|e| format!("running rabbitmqctl: {e}"))?;
        check(out)
    }

    /// Stops the node (`rabbitmqctl stop`, waiting for the process to exit), SIGKILL if that fails.
    pub fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        let pid_file = self.dir.join("node.pid").display().to_string();
        if let Err(e) = self.try_ctl(&["stop", &pid_file]) {
            eprintln!("stopping {} failed ({e}); killing it", self.name);
            if let Some(pid) = self.os_pid() {
                let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            }
        }
    }

    /// The node's OS process id, from its pid file.
    pub fn os_pid(&self) -> Option<u32> {
        fs::read_to_string(self.dir.join("node.pid"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
    }

    /// The last `lines` lines of the node's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.dir.join(format!("log/{}.log", self.name));
        let text = fs::read_to_string(&log).unwrap_or_else(|e| format!("({log:?}: {e})"));
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// A command for one of RabbitMQ's scripts with the node's environment, as the node's user,
    /// bounded by `timeout` (coreutils `timeout`).
    fn command(&self, script: &str, args: &[&str], timeout: Duration) -> Command {
        let program = if Path::new(DEBIAN_BIN).join(script).exists() {
            format!("{DEBIAN_BIN}/{script}")
        } else {
            script.to_owned()
        };
        let mut cmd = match self.run_as {
            Some(user) => {
                let mut cmd = Command::new("runuser");
                cmd.args(["-u", user, "--", "env"]);
                cmd
            }
            None => Command::new("env"),
        };
        cmd.args(self.env.iter().map(|(k, v)| format!("{k}={v}")))
            .arg("timeout")
            .arg(timeout.as_secs().to_string())
            .arg(program)
            .args(args)
            .current_dir(&self.dir)
            .stdin(Stdio::null());
        cmd
    }

    /// A process that outlives the tests: once this process has exited, it stops the node and
    /// removes its directory. It has its own process group, so a Ctrl-C on the tests spares it.
    fn spawn_watchdog(&self) -> Option<Child> {
        let stop = self.command("rabbitmqctl", &["-n", &self.name, "stop"], CTL_TIMEOUT);
        let quote =
            |s: &std::ffi::OsStr| format!("'{}'", s.to_string_lossy().replace('\'', r"'\''"));
        let stop_line: Vec<String> = std::iter::once(stop.get_program())
            .chain(stop.get_args())
            .map(quote)
            .collect();
        let pid_file = quote(self.dir.join("node.pid").as_os_str());
        let script = format!(
            "while kill -0 {parent} 2>/dev/null; do sleep 1; done; \
             cd /; {stop} >/dev/null 2>&1 || {{ [ -f {pid_file} ] && kill -9 \"$(cat {pid_file})\"; }}; \
             rm -rf {dir}",
            parent = std::process::id(),
            stop = stop_line.join(" "),
            dir = quote(self.dir.as_os_str()),
        );
        Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(|e| eprintln!("no watchdog for the private node: {e}"))
            .ok()
    }
}

impl Drop for PrivateNode {
    fn drop(&mut self) {
        self.stop();
        if let Some(mut watchdog) = self.watchdog.take() {
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// `rabbitmq` when running as root and that user exists, else `None` (run as ourselves).
fn run_as() -> Option<&'static str> {
    let uid = Command::new("id").arg("-u").output().ok()?;
    let is_root = String::from_utf8_lossy(&uid.stdout).trim() == "0";
    let has_user = Command::new("id")
        .arg("rabbitmq")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    (is_root && has_user).then_some("rabbitmq")
}

/// `count` distinct ports free on 127.0.0.1 and on all interfaces, from 20000–32000: below Linux's
/// ephemeral range (32768+), so an outgoing connection cannot take one before the node binds it.
fn free_ports(count: usize) -> Vec<u16> {
    let mut seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
        ^ (u64::from(std::process::id()) << 16);
    let mut ports = Vec::new();
    while ports.len() < count {
        // xorshift: no rand dependency needed for this.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let port = 20_000 + (seed % 12_000) as u16;
        // 25672 is the shared broker's distribution port (5672 + 20000).
        if port == 25_672 || ports.contains(&port) {
            continue;
        }
        if TcpListener::bind(("0.0.0.0", port)).is_ok()
            && TcpListener::bind(("127.0.0.1", port)).is_ok()
        {
            ports.push(port);
        }
    }
    ports
}

/// A random Erlang cookie: 32 letters.
fn cookie() -> String {
    let mut raw = [0u8; 32];
    if let Ok(mut f) = fs::File::open("/dev/urandom") {
        use std::io::Read;
        let _ = f.read_exact(&mut raw);
    }
    raw.iter().map(|b| char::from(b'A' + b % 26)).collect()
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    fs::write(path, text).map_err(|e| format!("writing {path:?}: {e}"))
}

fn set_mode(path: &Path, mode: u32) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|e| format!("chmod {path:?}: {e}"))
}

fn check(out: Output) -> Result<String, String> {
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "exit {}: {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}
