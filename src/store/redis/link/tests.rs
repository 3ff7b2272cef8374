//! What counts as a lost master, which master the sentinels name, and what the URL gives.

use super::sentinel::{choose, usable_master};
use super::*;
use std::collections::HashMap;

#[test]
fn what_counts_as_a_lost_master() {
    let io = |kind| RedisError::from(std::io::Error::new(kind, "test"));
    let readonly = RedisError::from((ErrorKind::Server(ServerErrorKind::ReadOnly), "READONLY"));
    let script = RedisError::from((ErrorKind::Server(ServerErrorKind::ResponseError), "ERR"));
    // Demoted, refused, reset: find the master again, whatever the connection carries.
    for carries_wait in [false, true] {
        assert!(lost_master(&readonly, carries_wait));
        assert!(lost_master(
            &io(std::io::ErrorKind::ConnectionRefused),
            carries_wait
        ));
        assert!(lost_master(
            &io(std::io::ErrorKind::ConnectionReset),
            carries_wait
        ));
        assert!(
            !lost_master(&script, carries_wait),
            "an error of the command itself"
        );
    }
    // A slow answer means a frozen or unreachable master, unless replicas were awaited.
    assert!(lost_master(&io(std::io::ErrorKind::TimedOut), false));
    assert!(!lost_master(&io(std::io::ErrorKind::TimedOut), true));
}

#[test]
fn only_a_master_that_is_up_counts() {
    let answer = |flags: &str| {
        let fields: HashMap<String, String> = [
            ("name", "m"),
            ("ip", "10.0.0.7"),
            ("port", "6380"),
            ("flags", flags),
            ("config-epoch", "4"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        usable_master(&fields)
    };
    assert_eq!(answer("master"), Some((4, "10.0.0.7".into(), 6380)));
    assert!(answer("master,disconnected").is_some(), "just switched to");
    for down in [
        "master,s_down",
        "master,s_down,o_down",
        "master,failover_in_progress",
        "slave",
    ] {
        assert_eq!(answer(down), None, "{down}");
    }
    assert_eq!(usable_master(&HashMap::new()), None, "no answer at all");
}

#[test]
fn the_newest_configuration_then_the_most_named_master_wins() {
    let n = |epoch, port| (epoch, "127.0.0.1".to_string(), port);
    let at = |port| Some(("127.0.0.1".to_string(), port));
    assert_eq!(choose(vec![]), None);
    assert_eq!(choose(vec![n(1, 7000), n(2, 7001), n(1, 7000)]), at(7001));
    assert_eq!(choose(vec![n(2, 7000), n(2, 7001), n(2, 7001)]), at(7001));
    assert_eq!(choose(vec![n(2, 7000), n(2, 7001)]), at(7000));
}

#[test]
fn the_url_gives_the_database_and_sentinels_need_host_port() {
    let url = Secret::new("redis://:pw@unused.invalid/3".to_string());
    let sentinel = crate::config::Sentinel {
        master_name: "m".into(),
        addresses: vec!["127.0.0.1:26379".into(), "[::1]:26380".into()],
    };
    let link = Link::new(&url, Some(&sentinel), 0).unwrap();
    assert_eq!(link.db, 3);
    let Target::Sentinel {
        master_name,
        urls,
        node,
    } = &link.target
    else {
        panic!("sentinel target");
    };
    assert_eq!(master_name, "m");
    assert_eq!(urls, &["redis://127.0.0.1:26379", "redis://[::1]:26380"]);
    assert_eq!((node.db(), node.password()), (3, Some("pw")));
    let Err(StoreError::Unavailable(e)) = Link::new(&Secret::new("nope".into()), None, 0) else {
        panic!("a bad URL is refused");
    };
    assert!(!e.contains("nope"), "{e}");
}
