//! The store port itself, on the suite's backend (local, or Redis with
//! `MAESTRO_TEST_BACKEND=redis`): what transactions promise beyond any one API route.

use crate::common;

use maestro_server::error::Error;
use maestro_server::ports::{Collection, ReaderExt, TxnExt, transact};
use serde_json::{Value, json};

/// The suite's backend on a fresh directory (kept alive by the returned guard).
fn open_domain() -> (tempfile::TempDir, maestro_server::domain::Domain) {
    let dir = tempfile::tempdir().unwrap();
    let config = common::config_for(dir.path()).expand_paths();
    let domain = maestro_server::open(&config, "http://localhost".into()).unwrap();
    (dir, domain)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insert_of_an_existing_id_fails_whole_and_writes_nothing() {
    let (_dir, domain) = open_domain();
    let store = domain.store.clone();

    transact(&*store, |tx| {
        tx.insert(
            Collection::Tasks,
            "t1",
            Some("p"),
            &json!({ "id": "t1", "v": 1 }),
        );
        tx.emit("p", "task:created", &json!({ "id": "t1" }), None);
        Ok(())
    })
    .await
    .unwrap();
    let head = domain.reader().unwrap().head_seq("p").unwrap();

    // The same id again, together with other writes and an event: nothing of it lands.
    let err = transact(&*store, |tx| {
        tx.put(Collection::Tasks, "t2", Some("p"), &json!({ "id": "t2" }));
        tx.insert(
            Collection::Tasks,
            "t1",
            Some("p"),
            &json!({ "id": "t1", "v": 2 }),
        );
        tx.emit("p", "task:created", &json!({ "id": "t1" }), None);
        Ok(())
    })
    .await
    .unwrap_err();
    assert!(matches!(err, Error::Conflict(_)), "{err:?}");
    let mut r = domain.reader().unwrap();
    let t1: Value = r.get(Collection::Tasks, "t1").unwrap().unwrap();
    assert_eq!(t1["v"], 1, "the first insert stands");
    assert!(r.get::<Value>(Collection::Tasks, "t2").unwrap().is_none());
    assert_eq!(
        r.head_seq("p").unwrap(),
        head,
        "no event of the failed commit"
    );
    let listed: Vec<Value> = r.list(Collection::Tasks, Some("p")).unwrap();
    assert_eq!(listed.len(), 1);

    // Inserted and read back in one transaction: the overlay has it.
    transact(&*store, |tx| {
        tx.insert(Collection::Tasks, "t3", Some("p"), &json!({ "id": "t3" }));
        assert!(tx.get::<Value>(Collection::Tasks, "t3")?.is_some());
        assert_eq!(tx.list::<Value>(Collection::Tasks, Some("p"))?.len(), 2);
        Ok(())
    })
    .await
    .unwrap();
    drop(r);
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_required_entity_that_is_missing_fails_the_commit_whole() {
    let (_dir, domain) = open_domain();
    let store = domain.store.clone();
    transact(&*store, |tx| {
        tx.put(Collection::Projects, "p", None, &json!({ "id": "p" }));
        Ok(())
    })
    .await
    .unwrap();

    let err = transact(&*store, |tx| {
        tx.require(Collection::Projects, "p", "Project");
        tx.require(Collection::Projects, "gone", "Project");
        tx.insert(
            Collection::Tasks,
            "t1",
            Some("gone"),
            &json!({ "id": "t1" }),
        );
        tx.emit("gone", "task:created", &json!({ "id": "t1" }), None);
        Ok(())
    })
    .await
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        Error::not_found("Project", "gone").to_string()
    );
    let mut r = domain.reader().unwrap();
    assert!(r.get::<Value>(Collection::Tasks, "t1").unwrap().is_none());
    assert_eq!(r.head_seq("gone").unwrap(), 0);

    transact(&*store, |tx| {
        tx.require(Collection::Projects, "p", "Project");
        tx.insert(Collection::Tasks, "t1", Some("p"), &json!({ "id": "t1" }));
        Ok(())
    })
    .await
    .unwrap();
    let mut r = domain.reader().unwrap();
    assert!(r.get::<Value>(Collection::Tasks, "t1").unwrap().is_some());
    // A transaction that only requires still checks.
    let err = transact(&*store, |tx| {
        tx.require(Collection::Tasks, "nope", "Task");
        Ok(())
    })
    .await
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        Error::not_found("Task", "nope").to_string()
    );
    drop(r);
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scan_newest_walks_back_across_pages_and_sees_the_transactions_own_writes() {
    let (_dir, domain) = open_domain();
    let store = domain.store.clone();
    // 600 entities (more than the first pages of a Redis scan hold), another owner's between.
    transact(&*store, |tx| {
        for n in 1..=600u64 {
            let id = format!("m{n}");
            tx.put(
                Collection::Mail,
                &id,
                Some("p"),
                &json!({ "id": id, "n": n }),
            );
            if n % 100 == 0 {
                let other = format!("q{n}");
                tx.put(
                    Collection::Mail,
                    &other,
                    Some("q"),
                    &json!({ "id": other, "n": 0 }),
                );
            }
        }
        Ok(())
    })
    .await
    .unwrap();
    let numbers = |v: &[Value]| {
        v.iter()
            .map(|m| m["n"].as_u64().unwrap())
            .collect::<Vec<_>>()
    };

    let mut r = domain.reader().unwrap();
    let after_50: Vec<Value> = r
        .newest_while(Collection::Mail, "p", |m: &Value| {
            m["n"].as_u64() > Some(50)
        })
        .unwrap();
    assert_eq!(
        numbers(&after_50),
        (51..=600).collect::<Vec<_>>(),
        "oldest first"
    );
    let mut visited = 0;
    r.scan_newest_raw(Collection::Mail, "p", &mut |_| {
        visited += 1;
        Ok(visited < 3)
    })
    .unwrap();
    assert_eq!(visited, 3, "the scan stops when told");
    let none: Vec<Value> = r
        .newest_while(Collection::Mail, "nobody", |_: &Value| true)
        .unwrap();
    assert!(none.is_empty());
    drop(r);

    // In a transaction: its own new entities come first, its updates and deletes count.
    let seen = transact(&*store, |tx| {
        tx.delete(Collection::Mail, "m600");
        tx.put(
            Collection::Mail,
            "m599",
            Some("p"),
            &json!({ "id": "m599", "n": 5990 }),
        );
        tx.put(
            Collection::Mail,
            "m601",
            Some("p"),
            &json!({ "id": "m601", "n": 601 }),
        );
        tx.put(
            Collection::Mail,
            "q601",
            Some("q"),
            &json!({ "id": "q601", "n": 0 }),
        );
        tx.newest_while(Collection::Mail, "p", |m: &Value| {
            m["n"].as_u64() > Some(596)
        })
    })
    .await
    .unwrap();
    assert_eq!(numbers(&seen), [597, 598, 5990, 601]);
    store.close().await;
}

/// A body that reads, even one that turns a failed read into a default, sees what the store
/// holds: on Redis a body is first run with nothing to read, and a run that tried to read is
/// thrown away whatever the body made of the error, then run again as a watched transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_swallows_a_read_error_still_reads_what_is_stored() {
    let (_dir, domain) = open_domain();
    let store = domain.store.clone();
    transact(&*store, |tx| {
        tx.put(
            Collection::Tasks,
            "t1",
            Some("p"),
            &json!({ "id": "t1", "n": 41 }),
        );
        Ok(())
    })
    .await
    .unwrap();
    let seen = transact(&*store, |tx| {
        // A careless body: any read error counts as "not there".
        let n = tx
            .get::<Value>(Collection::Tasks, "t1")
            .ok()
            .flatten()
            .and_then(|v| v["n"].as_u64())
            .unwrap_or(0);
        tx.put(
            Collection::Tasks,
            "t1",
            Some("p"),
            &json!({ "id": "t1", "n": n + 1 }),
        );
        Ok(n)
    })
    .await
    .unwrap();
    assert_eq!(seen, 41, "the body saw the stored value");
    let stored: Value = domain
        .reader()
        .unwrap()
        .get(Collection::Tasks, "t1")
        .unwrap()
        .unwrap();
    assert_eq!(stored["n"], 42);
}

/// A transaction body that panics fails only its own transaction (an internal error, nothing
/// written); the next one commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_transaction_fails_alone_and_the_store_carries_on() {
    let (_dir, domain) = open_domain();
    let store = domain.store.clone();
    let err = transact(&*store, |tx| -> maestro_server::error::Result<()> {
        tx.put(Collection::Tasks, "t1", Some("p"), &json!({ "id": "t1" }));
        panic!("a bug in a transaction body");
    })
    .await
    .unwrap_err();
    assert!(matches!(err, Error::Internal(_)), "{err:?}");
    assert_eq!(err.status(), 500);
    assert!(
        domain
            .reader()
            .unwrap()
            .get::<Value>(Collection::Tasks, "t1")
            .unwrap()
            .is_none()
    );
    transact(&*store, |tx| {
        tx.put(Collection::Tasks, "t2", Some("p"), &json!({ "id": "t2" }));
        Ok(())
    })
    .await
    .unwrap();
    assert!(
        domain
            .reader()
            .unwrap()
            .get::<Value>(Collection::Tasks, "t2")
            .unwrap()
            .is_some()
    );
}

/// A state snapshot taken while tasks are being created never counts an event in its head
/// whose task is missing from its data (the client would never see that task).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_under_concurrent_writes_holds_everything_its_heads_count() {
    use maestro_protocol::{CreateProject, CreateTask};
    let (_dir, domain) = open_domain();
    let project = domain
        .create_project(CreateProject {
            name: Some("snap".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .id;
    let writer = {
        let domain = domain.clone();
        let project = project.clone();
        tokio::spawn(async move {
            for i in 0..300 {
                domain
                    .create_task(CreateTask {
                        project_id: Some(project.clone()),
                        title: Some(format!("t{i}")),
                        ..Default::default()
                    })
                    .await
                    .unwrap();
            }
        })
    };
    let mut snapshots = Vec::new();
    while !writer.is_finished() {
        let d = domain.clone();
        let p = project.clone();
        snapshots.push(
            tokio::task::spawn_blocking(move || d.state_snapshot(Some(&p)))
                .await
                .unwrap()
                .unwrap(),
        );
    }
    writer.await.unwrap();
    assert!(!snapshots.is_empty());
    // Which seq created which task, from the journal.
    let journal = domain.store.replay(&project, 0, 10_000).await.unwrap();
    let created: Vec<(u64, String)> = journal
        .events
        .iter()
        .filter(|e| e.event == "task:created")
        .map(|e| (e.seq, e.data["id"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(created.len(), 300);
    for snap in &snapshots {
        let head = snap.seqs[&project];
        let ids: std::collections::HashSet<&str> =
            snap.tasks.iter().map(|t| t.id.as_str()).collect();
        for (seq, id) in &created {
            if *seq <= head {
                assert!(
                    ids.contains(id.as_str()),
                    "head {head} counts {id} (seq {seq}), the data lacks it"
                );
            }
        }
    }
}
