//! The apps file (`ESUB_APPS_FILE`): `parse_apps` on arbitrary bytes, and the checks of every
//! file it accepts. Each app authenticates with its own secret on pub (its topics), owner and
//! sub (its own topics, its subscriptions, in each of its groups) and fails with any other key;
//! unregistered groups and unknown appids are refused with the contract's texts.
//!
//! Input: the file's bytes.
#![no_main]

use esub::topics::auth::{
    AUTHENTICATION, AUTHORIZATION, Auth, EMPTY_IDENTITY, GROUP_UNREGISTERED, parse_apps,
};
use esub::topics::codec::valid_name;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let apps = match parse_apps(data) {
        Ok(apps) => apps,
        Err(e) => {
            assert!(!e.is_empty(), "an error says what is wrong");
            return;
        }
    };
    let auth = Auth::File(apps.clone());
    for (appid, app) in &apps.apps {
        assert!(valid_name(appid.as_bytes(), 64), "appid {appid:?}");
        assert!(!app.secret.is_empty());
        let (id, key) = (appid.as_bytes(), app.secret.as_bytes());
        let wrong = [key, b"x"].concat();
        for topic in &app.topics {
            assert!(valid_name(topic.as_bytes(), 64), "topic {topic:?}");
            assert_eq!(auth.check_pub(id, key, topic), Ok(()), "{appid} pubs to {topic}");
            assert_eq!(auth.check_owner(id, key, topic), Ok(()), "{appid} owns {topic}");
            assert_eq!(auth.check_sub(id, key, appid, topic, None), Ok(()));
            assert_eq!(auth.check_pub(id, &wrong, topic), Err(AUTHENTICATION));
            assert_eq!(auth.check_pub(id, b"", topic), Err(EMPTY_IDENTITY));
            assert_eq!(auth.check_sub(id, &wrong, appid, topic, None), Err(AUTHENTICATION));
            assert_eq!(auth.check_sub(b"", key, appid, topic, None), Err(EMPTY_IDENTITY));
        }
        for sub in &app.subscriptions {
            let (owner, topic) = sub.split_once('.').expect("owner.topic");
            assert_eq!(auth.check_sub(id, key, owner, topic, None), Ok(()), "{appid} reads {sub}");
            for group in &app.groups {
                assert_eq!(auth.check_sub(id, key, owner, topic, Some(group)), Ok(()));
            }
            // Never a topic of the same name elsewhere, unless subscribed as well.
            let other = format!("{owner}x");
            if other != *appid
                && other.len() <= 64
                && !app.subscriptions.contains(&format!("{other}.{topic}"))
            {
                assert_eq!(auth.check_sub(id, key, &other, topic, None), Err(AUTHORIZATION));
            }
        }
        let unregistered =
            format!("{}-", app.groups.iter().max().map_or("g", |g| &g[..g.len().min(63)]));
        if !app.groups.contains(&unregistered) {
            assert_eq!(
                auth.check_sub(id, key, appid, "t", Some(&unregistered)),
                Err(GROUP_UNREGISTERED)
            );
        }
        let is_admin =
            apps.admin.as_ref().is_some_and(|a| a.appid == *appid && a.secret == app.secret);
        assert_eq!(auth.check_admin(id, key).is_ok(), is_admin, "{appid} as admin");
    }
    if let Some(admin) = &apps.admin {
        let (id, key) = (admin.appid.as_bytes(), admin.secret.as_bytes());
        assert_eq!(auth.check_admin(id, key), Ok(()));
        assert_eq!(auth.check_admin(id, &[key, b"x"].concat()), Err(AUTHENTICATION));
        assert_eq!(auth.check_admin(id, b""), Err(EMPTY_IDENTITY));
    } else {
        assert_eq!(auth.check_admin(b"ops", b"s0"), Err(AUTHENTICATION));
    }
    // An appid outside the file.
    let stranger =
        apps.apps.keys().max().map_or("a".to_string(), |k| format!("{}z", &k[..k.len().min(63)]));
    if !apps.apps.contains_key(&stranger) {
        assert_eq!(auth.check_pub(stranger.as_bytes(), b"k", "t"), Err(AUTHENTICATION));
    }
});
