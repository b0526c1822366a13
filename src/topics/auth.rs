//! Identity and authorization of the `/v1/` routes (`API-topics.md` §1.1): the apps file
//! (`ESUB_APPS_FILE`), parsed strictly, and the pub, sub, admin and owner checks with their 401 texts.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::Path;

use serde_json::{Map, Value};

use super::codec::valid_name;

/// Appids, topics and groups: `[A-Za-z0-9_-]{1,64}` (§1).
const NAME_MAX: usize = 64;

pub const EMPTY_IDENTITY: &str = "auth with empty identity or key";
pub const AUTHENTICATION: &str = "authentication fails";
pub const AUTHORIZATION: &str = "authorization fails";
pub const GROUP_UNREGISTERED: &str = "group must be registered before usage";

/// The admin pair (management routes).
#[derive(Clone, PartialEq, Eq)]
pub struct Admin {
    pub appid: String,
    pub secret: String,
}

/// One app of the apps file. Its secret is both its `Pubkey` and its `Subkey`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct App {
    pub secret: String,
    /// Topics it owns (every ver): it may publish to them and read their `subd`.
    pub topics: HashSet<String>,
    /// `owner.topic` names of other apps' topics it may consume.
    pub subscriptions: HashSet<String>,
    /// Its registered consumer groups.
    pub groups: HashSet<String>,
}

/// A parsed apps file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Apps {
    /// Absent: no admin routes in file mode.
    pub admin: Option<Admin>,
    /// By appid.
    pub apps: HashMap<String, App>,
}

// Secrets stay out of logs and panic messages.
impl fmt::Debug for Admin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Admin").field("appid", &self.appid).field("secret", &"<hidden>").finish()
    }
}

impl fmt::Debug for App {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("App")
            .field("secret", &"<hidden>")
            .field("topics", &self.topics)
            .field("subscriptions", &self.subscriptions)
            .field("groups", &self.groups)
            .finish()
    }
}

/// `v` as an object with no member outside `allowed`.
fn object<'a>(
    v: &'a Value,
    what: &str,
    allowed: &[&str],
) -> Result<&'a Map<String, Value>, String> {
    let obj = v.as_object().ok_or_else(|| format!("{what}: not an object"))?;
    match obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(format!("{what}: unknown field {k:?}")),
        None => Ok(obj),
    }
}

/// A required, non-empty string member.
fn secret(obj: &Map<String, Value>, what: &str) -> Result<String, String> {
    match obj.get("secret") {
        None => Err(format!("{what}: missing \"secret\"")),
        Some(Value::String(s)) if s.is_empty() => Err(format!("{what}: empty \"secret\"")),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(format!("{what}: \"secret\" is not a string")),
    }
}

/// A required appid member that keeps the name rule.
fn appid(obj: &Map<String, Value>, what: &str) -> Result<String, String> {
    match obj.get("appid") {
        None => Err(format!("{what}: missing \"appid\"")),
        Some(Value::String(s)) if valid_name(s.as_bytes(), NAME_MAX) => Ok(s.clone()),
        Some(Value::String(s)) => Err(format!("{what}: appid {s:?} is not [A-Za-z0-9_-]{{1,64}}")),
        Some(_) => Err(format!("{what}: \"appid\" is not a string")),
    }
}

/// An optional array of strings (absent = empty), each checked by `ok`.
fn names(
    obj: &Map<String, Value>,
    field: &str,
    what: &str,
    ok: impl Fn(&str) -> bool,
    rule: &str,
) -> Result<HashSet<String>, String> {
    let Some(v) = obj.get(field) else {
        return Ok(HashSet::new());
    };
    let items = v.as_array().ok_or_else(|| format!("{what}.{field}: not an array"))?;
    let mut out = HashSet::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let s = item.as_str().ok_or_else(|| format!("{what}.{field}[{i}]: not a string"))?;
        if !ok(s) {
            return Err(format!("{what}.{field}[{i}]: {s:?} is not {rule}"));
        }
        out.insert(s.to_owned());
    }
    Ok(out)
}

fn name(s: &str) -> bool {
    valid_name(s.as_bytes(), NAME_MAX)
}

fn owner_topic(s: &str) -> bool {
    s.split_once('.').is_some_and(|(owner, topic)| name(owner) && name(topic))
}

/// Parses an apps file:
/// `{"admin": {"appid", "secret"}, "apps": [{"appid", "secret", "topics", "subscriptions", "groups"}]}`.
/// `admin` is optional, `apps` required (it may be `[]`). In an app `appid` and `secret` are
/// required, `topics`, `subscriptions` and `groups` optional (absent = none). Appids, topics and
/// groups keep the name rule, subscriptions are `owner.topic` of two names, secrets are non-empty
/// strings. Unknown fields at any level, a `null` anywhere and a duplicate appid are errors. The
/// error says where, for the log; it never quotes a secret.
pub fn parse_apps(json: &[u8]) -> Result<Apps, String> {
    let root: Value = serde_json::from_slice(json).map_err(|e| format!("not JSON: {e}"))?;
    let root = object(&root, "apps file", &["admin", "apps"])?;
    let admin = match root.get("admin") {
        None => None,
        Some(v) => {
            let obj = object(v, "admin", &["appid", "secret"])?;
            Some(Admin { appid: appid(obj, "admin")?, secret: secret(obj, "admin")? })
        }
    };
    let list = root.get("apps").ok_or("apps file: missing \"apps\"")?;
    let list = list.as_array().ok_or("apps: not an array")?;
    let mut apps = HashMap::with_capacity(list.len());
    for (i, v) in list.iter().enumerate() {
        let what = format!("apps[{i}]");
        let obj = object(v, &what, &["appid", "secret", "topics", "subscriptions", "groups"])?;
        let id = appid(obj, &what)?;
        let app = App {
            secret: secret(obj, &what)?,
            topics: names(obj, "topics", &what, name, "a topic name")?,
            subscriptions: names(obj, "subscriptions", &what, owner_topic, "owner.topic")?,
            groups: names(obj, "groups", &what, name, "a group name")?,
        };
        if apps.insert(id.clone(), app).is_some() {
            return Err(format!("{what}: duplicate appid {id:?}"));
        }
    }
    Ok(Apps { admin, apps })
}

/// Reads and parses an apps file; the error names the path.
pub fn load_apps(path: &Path) -> Result<Apps, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    parse_apps(&bytes).map_err(|e| format!("{}: {e}", path.display()))
}

/// Compares secrets in time that depends only on the length (lengths may differ at once: a
/// secret's length is not worth hiding behind a slower compare).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    // Keeps the optimiser from turning the fold into an early exit.
    std::hint::black_box(diff) == 0
}

/// How `/v1/` requests are authenticated: open mode (no `ESUB_APPS_FILE`) or an apps file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Auth {
    Open,
    File(Apps),
}

impl Auth {
    /// `open` or `file`, as `GET /v1/status` reports it.
    pub fn mode(&self) -> &'static str {
        match self {
            Auth::Open => "open",
            Auth::File(_) => "file",
        }
    }

    /// Authentication common to every check: the app (`None` in open mode) or the 401 text.
    fn app(&self, appid: &[u8], key: &[u8]) -> Result<Option<&App>, &'static str> {
        self.identity(appid, key)?;
        let Auth::File(apps) = self else {
            return Ok(None);
        };
        // The name rule made it ASCII.
        let id = std::str::from_utf8(appid).map_err(|_| AUTHENTICATION)?;
        match apps.apps.get(id) {
            Some(app) if ct_eq(app.secret.as_bytes(), key) => Ok(Some(app)),
            _ => Err(AUTHENTICATION),
        }
    }

    /// Publishing (and jobs) to `appid`'s own `topic`: `Appid` + `Pubkey`.
    pub fn check_pub(&self, appid: &[u8], pubkey: &[u8], topic: &str) -> Result<(), &'static str> {
        match self.app(appid, pubkey)? {
            Some(app) if !app.topics.contains(topic) => Err(AUTHORIZATION),
            _ => Ok(()),
        }
    }

    /// Consuming `owner`'s `topic` as `appid` (`Appid` + `Subkey`), in `group` when one is given.
    /// An app may always consume its own topics; another owner's needs `owner.topic` in its
    /// subscriptions. Group `__smoketest__` is the caller's to let through before this.
    pub fn check_sub(
        &self,
        appid: &[u8],
        subkey: &[u8],
        owner: &str,
        topic: &str,
        group: Option<&str>,
    ) -> Result<(), &'static str> {
        let Some(app) = self.app(appid, subkey)? else {
            return Ok(());
        };
        if group.is_some_and(|g| !app.groups.contains(g)) {
            return Err(GROUP_UNREGISTERED);
        }
        if owner.as_bytes() != appid && !app.subscriptions.contains(&format!("{owner}.{topic}")) {
            return Err(AUTHORIZATION);
        }
        Ok(())
    }

    /// Management routes: the admin pair (`Appid` + `Pubkey`). Open mode lets any valid appid in.
    pub fn check_admin(&self, appid: &[u8], pubkey: &[u8]) -> Result<(), &'static str> {
        self.identity(appid, pubkey)?;
        let Auth::File(apps) = self else {
            return Ok(());
        };
        match &apps.admin {
            Some(a) if a.appid.as_bytes() == appid && ct_eq(a.secret.as_bytes(), pubkey) => Ok(()),
            _ => Err(AUTHENTICATION),
        }
    }

    /// The first checks of every route, before any lookup: an appid, a key (file mode only),
    /// and the name rule.
    fn identity(&self, appid: &[u8], key: &[u8]) -> Result<(), &'static str> {
        if appid.is_empty() || (key.is_empty() && !matches!(self, Auth::Open)) {
            return Err(EMPTY_IDENTITY);
        }
        if !valid_name(appid, NAME_MAX) {
            return Err(AUTHENTICATION);
        }
        Ok(())
    }

    /// The owner of `topic` (`GET /v1/subd`): `Appid` + its `Subkey` or `Pubkey` (both are the
    /// secret), and `topic` among its topics.
    pub fn check_owner(&self, appid: &[u8], key: &[u8], topic: &str) -> Result<(), &'static str> {
        self.check_pub(appid, key, topic)
    }

    /// The caller alone (`GET /v1/sub/status`: `Appid` + `Subkey`), no topic or group.
    pub fn check_app(&self, appid: &[u8], key: &[u8]) -> Result<(), &'static str> {
        self.app(appid, key).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"{
        "admin": {"appid": "ops", "secret": "s0"},
        "apps": [
            {"appid": "app1", "secret": "s1", "topics": ["orders"],
             "subscriptions": ["app2.events"], "groups": ["billing"]},
            {"appid": "app2", "secret": "s2", "topics": ["events"]},
            {"appid": "app3", "secret": "s3", "topics": ["events"], "groups": []}
        ]}"#;

    fn file() -> Auth {
        Auth::File(parse_apps(FILE.as_bytes()).expect("the test file parses"))
    }

    #[test]
    fn parses_the_example() {
        let Auth::File(apps) = file() else { unreachable!() };
        assert_eq!(apps.admin, Some(Admin { appid: "ops".into(), secret: "s0".into() }));
        assert_eq!(apps.apps.len(), 3);
        let app1 = &apps.apps["app1"];
        assert_eq!(app1.secret, "s1");
        assert_eq!(app1.topics, HashSet::from(["orders".to_string()]));
        assert_eq!(app1.subscriptions, HashSet::from(["app2.events".to_string()]));
        assert_eq!(app1.groups, HashSet::from(["billing".to_string()]));
        assert!(apps.apps["app2"].groups.is_empty() && apps.apps["app2"].subscriptions.is_empty());
        assert!(!format!("{apps:?}").contains("s1"), "secrets stay out of Debug");
        assert_eq!(parse_apps(br#"{"apps": []}"#), Ok(Apps::default()));
    }

    #[test]
    fn refuses_bad_files() {
        for (json, err) in [
            ("", "not JSON"),
            ("[]", "apps file: not an object"),
            (r#"{}"#, r#"apps file: missing "apps""#),
            (r#"{"apps": {}}"#, "apps: not an array"),
            (r#"{"apps": [], "x": 1}"#, r#"apps file: unknown field "x""#),
            (r#"{"apps": [], "admin": null}"#, "admin: not an object"),
            (r#"{"apps": [], "admin": {"appid": "ops"}}"#, r#"admin: missing "secret""#),
            (
                r#"{"apps": [], "admin": {"appid": "o", "secret": "s", "k": 1}}"#,
                r#"admin: unknown field "k""#,
            ),
            (r#"{"apps": [1]}"#, "apps[0]: not an object"),
            (r#"{"apps": [{"secret": "s"}]}"#, r#"apps[0]: missing "appid""#),
            (r#"{"apps": [{"appid": "a"}]}"#, r#"apps[0]: missing "secret""#),
            (r#"{"apps": [{"appid": "a", "secret": ""}]}"#, r#"apps[0]: empty "secret""#),
            (r#"{"apps": [{"appid": "a", "secret": 1}]}"#, r#"apps[0]: "secret" is not a string"#),
            (r#"{"apps": [{"appid": 1, "secret": "s"}]}"#, r#"apps[0]: "appid" is not a string"#),
            (
                r#"{"apps": [{"appid": "a.b", "secret": "s"}]}"#,
                "apps[0]: appid \"a.b\" is not [A-Za-z0-9_-]{1,64}",
            ),
            (
                r#"{"apps": [{"appid": "a", "secret": "s", "Topics": []}]}"#,
                r#"apps[0]: unknown field "Topics""#,
            ),
            (
                r#"{"apps": [{"appid": "a", "secret": "s", "topics": "t"}]}"#,
                "apps[0].topics: not an array",
            ),
            (
                r#"{"apps": [{"appid": "a", "secret": "s", "topics": [1]}]}"#,
                "apps[0].topics[0]: not a string",
            ),
            (
                r#"{"apps": [{"appid": "a", "secret": "s", "topics": ["t", ""]}]}"#,
                "apps[0].topics[1]: \"\" is not a topic name",
            ),
            (
                r#"{"apps": [{"appid": "a", "secret": "s", "groups": ["g g"]}]}"#,
                "apps[0].groups[0]: \"g g\" is not a group name",
            ),
            (
                r#"{"apps": [{"appid": "a", "secret": "s", "subscriptions": ["b"]}]}"#,
                "apps[0].subscriptions[0]: \"b\" is not owner.topic",
            ),
            (
                r#"{"apps": [{"appid": "a", "secret": "s", "subscriptions": ["b.t.v"]}]}"#,
                "apps[0].subscriptions[0]: \"b.t.v\" is not owner.topic",
            ),
            (
                r#"{"apps": [{"appid": "a", "secret": "s"}, {"appid": "a", "secret": "t"}]}"#,
                "apps[1]: duplicate appid \"a\"",
            ),
        ] {
            let got = parse_apps(json.as_bytes()).expect_err(json);
            if err == "not JSON" {
                assert!(got.starts_with(err), "{json}: {got}");
            } else {
                assert_eq!(got, err, "{json}");
            }
        }
    }

    #[test]
    fn constant_time_compare() {
        for (a, b, eq) in [
            (&b""[..], &b""[..], true),
            (b"s1", b"s1", true),
            (b"s1", b"s2", false),
            (b"s1", b"s10", false),
            (b"\x00", b"", false),
        ] {
            assert_eq!(ct_eq(a, b), eq, "{a:?} {b:?}");
        }
    }

    type Sub<'a> = (&'a str, &'a str, &'a str, &'a str, Option<&'a str>);

    #[test]
    fn file_mode() {
        let auth = file();
        for ((appid, key, topic), want) in [
            (("app1", "s1", "orders"), Ok(())),
            (("", "s1", "orders"), Err(EMPTY_IDENTITY)),
            (("app1", "", "orders"), Err(EMPTY_IDENTITY)),
            (("", "", "orders"), Err(EMPTY_IDENTITY)),
            (("app1.x", "s1", "orders"), Err(AUTHENTICATION)),
            (("nobody", "s1", "orders"), Err(AUTHENTICATION)),
            (("app1", "s2", "orders"), Err(AUTHENTICATION)),
            (("app1", "s1 ", "orders"), Err(AUTHENTICATION)),
            (("ops", "s0", "orders"), Err(AUTHENTICATION)),
            (("app1", "s1", "events"), Err(AUTHORIZATION)),
            (("app2", "s2", "orders"), Err(AUTHORIZATION)),
        ] {
            let got = auth.check_pub(appid.as_bytes(), key.as_bytes(), topic);
            assert_eq!(got, want, "pub {appid} {key} {topic}");
            let got = auth.check_owner(appid.as_bytes(), key.as_bytes(), topic);
            assert_eq!(got, want, "owner {appid} {key} {topic}");
            // No topic to authorize: the identity alone.
            let app_want = if want == Err(AUTHORIZATION) { Ok(()) } else { want };
            let got = auth.check_app(appid.as_bytes(), key.as_bytes());
            assert_eq!(got, app_want, "app {appid} {key}");
        }
        let subs: &[(Sub, Result<(), &str>)] = &[
            (("app1", "s1", "app1", "orders", Some("billing")), Ok(())),
            (("app1", "s1", "app1", "anything", None), Ok(())),
            (("app1", "s1", "app2", "events", Some("billing")), Ok(())),
            (("app1", "", "app2", "events", None), Err(EMPTY_IDENTITY)),
            (("", "s1", "app2", "events", None), Err(EMPTY_IDENTITY)),
            (("app1", "s2", "app2", "events", None), Err(AUTHENTICATION)),
            (("app9", "s1", "app2", "events", None), Err(AUTHENTICATION)),
            // The group is checked before the topic.
            (("app1", "s1", "app3", "events", Some("other")), Err(GROUP_UNREGISTERED)),
            (("app2", "s2", "app2", "events", Some("billing")), Err(GROUP_UNREGISTERED)),
            // `app2.events` grants nothing on `app3.events`, nor on app2's other topics.
            (("app1", "s1", "app3", "events", Some("billing")), Err(AUTHORIZATION)),
            (("app1", "s1", "app3", "events", None), Err(AUTHORIZATION)),
            (("app1", "s1", "app2", "orders", None), Err(AUTHORIZATION)),
            (("app3", "s3", "app2", "events", None), Err(AUTHORIZATION)),
        ];
        for &((appid, key, owner, topic, group), want) in subs {
            let got = auth.check_sub(appid.as_bytes(), key.as_bytes(), owner, topic, group);
            assert_eq!(got, want, "sub {appid} {key} {owner}.{topic} {group:?}");
        }
        for ((appid, key), want) in [
            (("ops", "s0"), Ok(())),
            (("ops", ""), Err(EMPTY_IDENTITY)),
            (("", "s0"), Err(EMPTY_IDENTITY)),
            (("ops", "s1"), Err(AUTHENTICATION)),
            (("app1", "s1"), Err(AUTHENTICATION)),
            (("op s", "s0"), Err(AUTHENTICATION)),
        ] {
            assert_eq!(auth.check_admin(appid.as_bytes(), key.as_bytes()), want, "admin {appid}");
        }
        let no_admin = Auth::File(parse_apps(br#"{"apps": []}"#).expect("parses"));
        assert_eq!(no_admin.check_admin(b"ops", b"s0"), Err(AUTHENTICATION));
        assert_eq!(auth.mode(), "file");
    }

    #[test]
    fn open_mode() {
        let auth = Auth::Open;
        assert_eq!(auth.mode(), "open");
        for (appid, key, want) in [
            ("anyone", "", Ok(())),
            ("anyone", "whatever", Ok(())),
            ("", "", Err(EMPTY_IDENTITY)),
            ("", "k", Err(EMPTY_IDENTITY)),
            ("a.b", "k", Err(AUTHENTICATION)),
            ("a.b", "", Err(AUTHENTICATION)),
        ] {
            let (id, k) = (appid.as_bytes(), key.as_bytes());
            assert_eq!(auth.check_pub(id, k, "t"), want, "pub {appid:?}");
            assert_eq!(auth.check_sub(id, k, "other", "t", Some("unregistered")), want, "sub");
            assert_eq!(auth.check_admin(id, k), want, "admin {appid:?}");
            assert_eq!(auth.check_owner(id, k, "t"), want, "owner {appid:?}");
        }
    }
}
