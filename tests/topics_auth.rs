//! Topics identity and auth (API-topics.md 1.1, 3): the apps file, each 401 in order,
//! subscriptions naming the owner, SIGHUP reload, a bad file at start-up, and open mode.

mod common;

use common::run_to_exit;
use common::topics::{DataDir, FAST, Headers, Topics, partitions_json};
use std::path::PathBuf;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

const APPS: &str = r#"{"admin": {"appid": "ops", "secret": "s0"},
 "apps": [
  {"appid": "app1", "secret": "s1", "topics": ["orders"],
   "subscriptions": ["app2.events"], "groups": ["billing"]},
  {"appid": "app2", "secret": "s2", "topics": ["events"], "subscriptions": [], "groups": ["g2"]},
  {"appid": "app3", "secret": "s3", "topics": ["events"], "subscriptions": [], "groups": ["g3"]}
 ]}"#;

/// A file beside the data directory (inside it would be written to by the server).
struct AppsFile {
    path: PathBuf,
}

impl AppsFile {
    fn new(dir: &DataDir, text: &str) -> AppsFile {
        let path = PathBuf::from(format!("{}.apps.json", dir.as_str()));
        let f = AppsFile { path };
        f.write(text);
        f
    }

    /// Replace atomically (write + rename), so a reload never sees half a file.
    fn write(&self, text: &str) {
        let tmp = self.path.with_extension("tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &self.path).unwrap();
    }

    fn as_str(&self) -> &str {
        self.path.to_str().unwrap()
    }
}

impl Drop for AppsFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A server in file mode. The apps file is declared first so it outlives the server.
fn start(name: &str, text: &str, env: &[(&str, &str)]) -> (AppsFile, Topics) {
    let dir = DataDir::new(name);
    let apps = AppsFile::new(&dir, text);
    let mut all = vec![("ESUB_APPS_FILE", apps.as_str())];
    all.extend_from_slice(env);
    let server = common::topics::start_in(&dir, &all);
    (apps, Topics { server, dir })
}

fn admin_create(t: &Topics, owner: &str, topic: &str, p: u32) {
    t.once(
        "POST",
        &format!("/v1/topics/{owner}/{topic}/v1?partitions={p}"),
        &[("Appid", "ops"), ("Pubkey", "s0")],
        b"",
    )
    .assert_ok(201);
}

fn pubr(t: &Topics, topic: &str, h: &[(&str, &str)], body: &[u8]) -> common::topics::Resp {
    t.once("POST", &format!("/v1/msgs/{topic}/v1"), h, body)
}

fn subr(t: &Topics, path: &str, h: &[(&str, &str)]) -> common::topics::Resp {
    t.conn().req("GET", path, h, b"")
}

#[test]
fn pub_401s_in_order() {
    let (_f, t) = start("auth-pub", APPS, &[]);
    admin_create(&t, "app1", "orders", 1);
    admin_create(&t, "app2", "events", 1);
    let cases: &[(Headers, &str, &str)] = &[
        (&[], "orders", "auth with empty identity or key"),
        (&[("Appid", "app1")], "orders", "auth with empty identity or key"),
        (&[("Pubkey", "s1")], "orders", "auth with empty identity or key"),
        (&[("Appid", ""), ("Pubkey", "s1")], "orders", "auth with empty identity or key"),
        (&[("Appid", "app1"), ("Pubkey", "")], "orders", "auth with empty identity or key"),
        // The sub key does not count on the pub side.
        (&[("Appid", "app1"), ("Subkey", "s1")], "orders", "auth with empty identity or key"),
        (&[("Appid", "nobody"), ("Pubkey", "s1")], "orders", "authentication fails"),
        (&[("Appid", "app1"), ("Pubkey", "s2")], "orders", "authentication fails"),
        (&[("Appid", "app1"), ("Pubkey", "S1")], "orders", "authentication fails"),
        (&[("Appid", "bad.app"), ("Pubkey", "s1")], "orders", "authentication fails"),
        // Wrong key beats an unowned topic.
        (&[("Appid", "app1"), ("Pubkey", "s2")], "events", "authentication fails"),
        (&[("Appid", "app1"), ("Pubkey", "s1")], "events", "authorization fails"),
        // The admin is not a publisher.
        (&[("Appid", "ops"), ("Pubkey", "s0")], "orders", "authentication fails"),
    ];
    for (h, topic, text) in cases {
        let r = pubr(&t, topic, h, b"");
        assert_eq!(
            (r.status, r.body_str()),
            (401, format!(r#"{{"errmsg":"{text}"}}"#)),
            "{topic} {h:?}"
        );
        assert_eq!(r.reason, "Unauthorized");
    }
    // Header names are case-insensitive.
    assert_eq!(pubr(&t, "orders", &[("appid", "app1"), ("PUBKEY", "s1")], b"m").pubd(), (0, 0));
    assert_eq!(t.partitions_file("app1", "orders"), partitions_json(&[(0, 1)]));
}

trait FileMode {
    fn partitions_file(&self, owner: &str, topic: &str) -> String;
}

impl FileMode for Topics {
    fn partitions_file(&self, owner: &str, topic: &str) -> String {
        let r = self.once(
            "GET",
            &format!("/v1/partitions/{owner}/{topic}/v1"),
            &[("Appid", "ops"), ("Pubkey", "s0")],
            b"",
        );
        assert_eq!(r.status, 200, "{r:?}");
        r.body_str()
    }
}

#[test]
fn missing_topic_is_400_after_auth_in_file_mode() {
    let (_f, t) = start("auth-missing", APPS, &[FAST]);
    pubr(&t, "orders", &[("Appid", "app1"), ("Pubkey", "s1")], b"m")
        .assert_err(400, "invalid topic");
    // Not created by the pub (no auto-create with an apps file).
    pubr(&t, "orders", &[("Appid", "app1"), ("Pubkey", "s1")], b"m")
        .assert_err(400, "invalid topic");
    // Auth first.
    pubr(&t, "orders", &[("Appid", "app1"), ("Pubkey", "x")], b"m")
        .assert_err(401, "authentication fails");
    t.once("GET", "/v1/partitions/app1/orders/v1", &[("Appid", "ops"), ("Pubkey", "s0")], b"")
        .assert_err(400, "invalid topic");
}

#[test]
fn sub_to_a_missing_topic_is_400_in_file_mode() {
    let (_f, t) = start("auth-missing-sub", APPS, &[FAST]);
    subr(&t, "/v1/msgs/app1/orders/v1?group=billing", &[("Appid", "app1"), ("Subkey", "s1")])
        .assert_err(400, "invalid topic");
    subr(&t, "/v1/msgs/app1/orders/v1?group=billing", &[("Appid", "app1"), ("Subkey", "s1")])
        .assert_err(400, "invalid topic");
    t.once("GET", "/v1/partitions/app1/orders/v1", &[("Appid", "ops"), ("Pubkey", "s0")], b"")
        .assert_err(400, "invalid topic");
}

#[test]
fn sub_401s_in_order_and_subscriptions_name_the_owner() {
    let (_f, t) = start("auth-sub", APPS, &[FAST]);
    admin_create(&t, "app1", "orders", 1);
    admin_create(&t, "app2", "events", 1);
    admin_create(&t, "app3", "events", 1);
    let s1 = [("Appid", "app1"), ("Subkey", "s1")];
    let cases: &[(&str, Headers, &str)] = &[
        ("/v1/msgs/app2/events/v1?group=billing", &[], "auth with empty identity or key"),
        (
            "/v1/msgs/app2/events/v1?group=billing",
            &[("Appid", "app1"), ("Pubkey", "s1")],
            "auth with empty identity or key",
        ),
        (
            "/v1/msgs/app2/events/v1?group=billing",
            &[("Appid", "app1"), ("Subkey", "s2")],
            "authentication fails",
        ),
        // Unregistered group before the subscription check.
        ("/v1/msgs/app3/events/v1?group=nogroup", &s1, "group must be registered before usage"),
        ("/v1/msgs/app2/events/v1?group=g2", &s1, "group must be registered before usage"),
        // `app2.events` grants nothing on `app3.events`.
        ("/v1/msgs/app3/events/v1?group=billing", &s1, "authorization fails"),
    ];
    for (path, h, text) in cases {
        let r = subr(&t, path, h);
        assert_eq!(
            (r.status, r.body_str()),
            (401, format!(r#"{{"errmsg":"{text}"}}"#)),
            "{path} {h:?}"
        );
    }
    // Granted: the subscribed topic and the caller's own one.
    subr(&t, "/v1/msgs/app2/events/v1?group=billing", &s1).assert_204();
    subr(&t, "/v1/msgs/app1/orders/v1?group=billing", &s1).assert_204();
    // PUT acks use the same sub auth.
    t.once("PUT", "/v1/offsets/app3/events/v1/billing", &s1, br#"[{"partition":0,"offset":-1}]"#)
        .assert_err(401, "authorization fails");
    t.once("PUT", "/v1/offsets/app2/events/v1/billing", &s1, br#"[{"partition":0,"offset":-1}]"#)
        .assert_ok(200);
}

#[test]
fn admin_401s() {
    let (_f, t) = start("auth-admin", APPS, &[]);
    let path = "/v1/topics/app1/orders/v1?partitions=2";
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[], "auth with empty identity or key"),
        (&[("Appid", "ops")], "auth with empty identity or key"),
        (&[("Appid", "ops"), ("Pubkey", "s1")], "authentication fails"),
        (&[("Appid", "app1"), ("Pubkey", "s1")], "authentication fails"),
        (&[("Appid", "nobody"), ("Pubkey", "s0")], "authentication fails"),
    ];
    for (h, text) in cases {
        let r = t.once("POST", path, h, b"");
        assert_eq!((r.status, r.body_str()), (401, format!(r#"{{"errmsg":"{text}"}}"#)), "{h:?}");
    }
    // Admin auth comes before the partitions check.
    t.once("POST", "/v1/topics/app1/orders/v1", &[("Appid", "app1"), ("Pubkey", "s1")], b"")
        .assert_err(401, "authentication fails");
    t.once("POST", path, &[("Appid", "ops"), ("Pubkey", "s0")], b"").assert_ok(201);
    t.once("GET", "/v1/partitions/app1/orders/v1", &[("Appid", "app1"), ("Pubkey", "s1")], b"")
        .assert_err(401, "authentication fails");
    assert_eq!(t.partitions_file("app1", "orders"), partitions_json(&[(0, 0), (0, 0)]));
}

#[test]
fn sighup_reloads_the_apps_file() {
    let (f, t) = start("auth-hup", APPS, &[FAST]);
    admin_create(&t, "app1", "orders", 1);
    admin_create(&t, "app4", "orders", 1);
    let app4 = [("Appid", "app4"), ("Pubkey", "s4")];
    pubr(&t, "orders", &app4, b"m").assert_err(401, "authentication fails");
    // app4 now owns its `orders` (app4.orders.v1); app1 loses its own.
    let new = r#"{"admin": {"appid": "ops", "secret": "s0"},
      "apps": [{"appid": "app4", "secret": "s4", "topics": ["orders"], "subscriptions": [], "groups": []},
               {"appid": "app1", "secret": "s1", "topics": [], "subscriptions": [], "groups": []}]}"#;
    f.write(new);
    hup(&t);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = pubr(&t, "orders", &app4, b"m");
        if r.status != 401 {
            assert_eq!(r.pubd(), (0, 0));
            break;
        }
        r.assert_err(401, "authentication fails");
        assert!(Instant::now() < deadline, "reload not applied");
        thread::sleep(Duration::from_millis(10));
    }
    pubr(&t, "orders", &[("Appid", "app1"), ("Pubkey", "s1")], b"m")
        .assert_err(401, "authorization fails");

    // A bad file on reload: logged, the old one kept.
    let lines_before = t.stderr().lines().count();
    f.write("{\"apps\": [], \"unknown\": 1}");
    hup(&t);
    let deadline = Instant::now() + Duration::from_secs(10);
    while t.stderr().lines().count() == lines_before {
        assert!(Instant::now() < deadline, "bad reload not logged:\n{}", t.stderr());
        thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(pubr(&t, "orders", &app4, b"m").pubd(), (0, 1));
    pubr(&t, "orders", &[("Appid", "app1"), ("Pubkey", "s1")], b"m")
        .assert_err(401, "authorization fails");
}

fn hup(t: &Topics) {
    let st = Command::new("kill").args(["-HUP", &t.pid().to_string()]).status().unwrap();
    assert!(st.success());
}

#[test]
fn bad_apps_file_at_start_exits_2_naming_the_variable() {
    let dir = DataDir::new("auth-bad");
    let missing = format!("{}.missing.json", dir.as_str());
    let bad_json = AppsFile::new(&dir, "{not json");
    let cases: Vec<(String, String)> = vec![
        (missing.clone(), "missing".into()),
        (bad_json.as_str().to_string(), "bad json".into()),
    ];
    let others = [
        ("unknown field", r#"{"admin": {"appid": "ops", "secret": "s0"}, "apps": [], "extra": 1}"#),
        (
            "unknown app field",
            r#"{"apps": [{"appid": "a", "secret": "s", "topics": [], "subscriptions": [], "groups": [], "x": 1}]}"#,
        ),
        ("wrong type", r#"{"apps": [{"appid": "a", "secret": 1}]}"#),
        (
            "bad appid",
            r#"{"apps": [{"appid": "a.b", "secret": "s", "topics": [], "subscriptions": [], "groups": []}]}"#,
        ),
    ];
    let files: Vec<(AppsFile, &str)> = others
        .iter()
        .enumerate()
        .map(|(i, (what, text))| {
            let d = DataDir::new(&format!("auth-bad-{i}"));
            (AppsFile::new(&d, text), *what)
        })
        .collect();
    let mut all: Vec<(String, String)> = cases;
    all.extend(files.iter().map(|(f, w)| (f.as_str().to_string(), w.to_string())));
    for (path, what) in &all {
        let out = run_to_exit(
            &[],
            &[("ESUB_APPS_FILE", path), ("ESUB_DATA_DIR", dir.as_str())],
            Duration::from_secs(10),
        );
        assert_eq!(
            out.status.and_then(|s| s.code()),
            Some(2),
            "{what}: exit status; stderr {}",
            out.stderr
        );
        assert!(out.stderr.contains("ESUB_APPS_FILE"), "{what}: stderr {:?}", out.stderr);
        assert!(!out.stdout.contains("listening on"), "{what}: it started: {}", out.stdout);
    }
}

#[test]
fn open_mode_warns_and_auto_creates_with_default_partitions() {
    let t = Topics::start("auth-open", &[FAST, ("ESUB_DEFAULT_PARTITIONS", "3")]);
    let warn = t.wait_stderr("starting with WARN", |l| l.starts_with("WARN"));
    assert!(!warn.is_empty());
    // A pub creates the topic.
    let mut c = t.conn();
    assert_eq!(c.publish("anyapp", "/v1/msgs/fresh/v1", &[], b"m").pubd(), (0, 0));
    assert_eq!(t.partitions("anyapp", "fresh", "v1"), partitions_json(&[(0, 1), (0, 0), (0, 0)]));
    // A batch pub too.
    let body = common::topics::rec(b"", b"", b"b");
    c.publish("anyapp", "/v1/msgs/fresh2/v1?batch=1", &[], &body)
        .assert_json(201, r#"{"ok":1,"msgs":[{"partition":0,"offset":0}]}"#);
    assert_eq!(t.partitions("anyapp", "fresh2", "v1"), partitions_json(&[(0, 1), (0, 0), (0, 0)]));
    // A sub by anyone, in any group, creates another app's topic.
    c.sub("stranger", "/v1/msgs/owner9/fresh3/v1?group=whatever", &[]).assert_204();
    assert_eq!(t.partitions("owner9", "fresh3", "v1"), partitions_json(&[(0, 0), (0, 0), (0, 0)]));
}
