//! Staging against the emulator through the real SDK: creation, new versions, replays,
//! restore, ownership, size and KMS failures.

mod support;

use rack_secrets::stage::{CURRENT, STAGED};
use rack_secrets::{EnvFile, Kind, SecretVersion};
use support::{AppSpec, TestRack};

const ENV_R1: &str = "DATABASE_URL=postgres://u:p@h/db\nMODE=one\n";
const ENV_R2: &str = "DATABASE_URL=postgres://u:p@h/db\nMODE=two\n";
const ENV_R3: &str = "DATABASE_URL=postgres://u:p@h/db\nMODE=three\nNEW=1\n";

fn version_of(text: &str) -> String {
    let env = EnvFile::parse(text.as_bytes()).unwrap();
    SecretVersion::new("any", &env).unwrap().version_id
}

#[tokio::test]
async fn a_new_app_gets_a_tagged_secret_holding_its_environment() {
    let t = TestRack::new(&[]).await;
    let bucket = t.create_app("web", "R1", AppSpec::default()).await;
    t.write_env(&bucket, "R1", ENV_R1).await;

    let staged = t.rack.stage_release("web", &bucket, "R1").await.unwrap();

    assert!(staged.written);
    assert_eq!(staged.secret_name, t.secret_name("web"));
    assert!(staged.secret_arn.contains(&t.secret_name("web")));
    assert_eq!(staged.version_id, version_of(ENV_R1));
    assert_eq!(staged.keys, ["DATABASE_URL", "MODE"]);
    let value = t.read_version("web", &staged.version_id).await;
    assert_eq!(value["DATABASE_URL"], "postgres://u:p@h/db");
    assert_eq!(value["MODE"], "one");
    let labels = &t.labelled_versions("web").await[&staged.version_id];
    assert!(labels.iter().any(|l| l == STAGED), "{labels:?}");

    let description = t.describe("web").await;
    let tags: Vec<(String, String)> = description
        .tags
        .unwrap()
        .into_iter()
        .map(|tag| (tag.key.unwrap(), tag.value.unwrap()))
        .collect();
    for expected in [
        ("System", "convox"),
        ("Rack", t.name.as_str()),
        ("App", "web"),
        ("ManagedBy", "rack-secrets"),
    ] {
        assert!(
            tags.iter().any(|(k, v)| k == expected.0 && v == expected.1),
            "missing tag {expected:?} in {tags:?}"
        );
    }
}

#[tokio::test]
async fn a_changed_environment_becomes_a_staged_version_and_awscurrent_stays() {
    let t = TestRack::new(&[]).await;
    let bucket = t.create_app("web", "R1", AppSpec::default()).await;
    t.write_env(&bucket, "R1", ENV_R1).await;
    t.write_env(&bucket, "R2", ENV_R2).await;

    let first = t.rack.stage_release("web", &bucket, "R1").await.unwrap();
    let current_before = t.version_with("web", CURRENT).await;
    let second = t.rack.stage_release("web", &bucket, "R2").await.unwrap();

    assert!(second.written);
    assert_ne!(first.version_id, second.version_id);
    assert_eq!(
        t.version_with("web", STAGED).await.as_deref(),
        Some(&*second.version_id)
    );
    assert_eq!(t.version_with("web", CURRENT).await, current_before);
    assert_eq!(
        t.read_version("web", &second.version_id).await["MODE"],
        "two"
    );
    assert_eq!(
        t.read_version("web", &first.version_id).await["MODE"],
        "one"
    );
}

#[tokio::test]
async fn one_environment_synced_ten_times_is_one_version_and_no_writes_after_the_first() {
    let t = TestRack::new(&[]).await;
    let bucket = t.create_app("web", "R1", AppSpec::default()).await;
    t.write_env(&bucket, "R1", ENV_R1).await;

    let first = t.rack.stage_release("web", &bucket, "R1").await.unwrap();
    let writes_after_first = t.counter.writes();
    for _ in 0..9 {
        let again = t.rack.stage_release("web", &bucket, "R1").await.unwrap();
        assert!(!again.written);
        assert_eq!(again.version_id, first.version_id);
    }

    assert!(writes_after_first > 0);
    assert_eq!(
        t.counter.writes(),
        writes_after_first,
        "a replay made write calls"
    );
    assert_eq!(t.all_versions("web").await, [first.version_id]);
}

#[tokio::test]
async fn late_duplicate_and_out_of_order_releases_are_each_staged_once() {
    let t = TestRack::new(&[]).await;
    let bucket = t.create_app("web", "R1", AppSpec::default()).await;
    for (release, text) in [("R1", ENV_R1), ("R2", ENV_R2), ("R3", ENV_R3)] {
        t.write_env(&bucket, release, text).await;
    }
    t.rack.stage_release("web", &bucket, "R1").await.unwrap();
    let current = t.version_with("web", CURRENT).await;

    let mut written = Vec::new();
    for release in ["R3", "R2", "R3"] {
        let staged = t.rack.stage_release("web", &bucket, release).await.unwrap();
        written.push(staged.written);
    }

    assert_eq!(written, [true, true, false]);
    let mut versions = t.all_versions("web").await;
    versions.sort();
    let mut expected = vec![version_of(ENV_R1), version_of(ENV_R2), version_of(ENV_R3)];
    expected.sort();
    assert_eq!(versions, expected);
    assert_eq!(
        t.version_with("web", CURRENT).await,
        current,
        "staging moved AWSCURRENT"
    );
}

/// AWS answers writes to a secret scheduled for deletion with InvalidRequestException; moto
/// accepts them. Either way the secret must come back restored, so the test checks that the
/// deletion was cancelled, not only that the write went through.
#[tokio::test]
async fn a_secret_scheduled_for_deletion_is_restored_then_staged() {
    let t = TestRack::new(&[]).await;
    let bucket = t.create_app("web", "R1", AppSpec::default()).await;
    t.write_env(&bucket, "R1", ENV_R1).await;
    t.rack.stage_release("web", &bucket, "R1").await.unwrap();
    t.secrets
        .delete_secret()
        .secret_id(t.secret_name("web"))
        .recovery_window_in_days(7)
        .send()
        .await
        .unwrap();

    t.write_env(&bucket, "R2", ENV_R2).await;
    let staged = t.rack.stage_release("web", &bucket, "R2").await.unwrap();

    let deleted = t.deletion_date("web").await;
    assert!(
        deleted.is_none(),
        "the secret is still scheduled for deletion"
    );
    assert!(staged.written);
    assert_eq!(
        t.read_version("web", &staged.version_id).await["MODE"],
        "two"
    );
    assert_eq!(
        t.counter.creates(),
        1,
        "only the first staging created the secret"
    );
}

/// The same, when the deletion is scheduled after staging looked at the secret: the write is
/// refused with InvalidRequestException (AWS's rule, enforced here by the test layer since
/// moto does not), and staging restores the secret and writes again, never "not found".
#[tokio::test]
async fn a_write_refused_because_of_a_pending_deletion_restores_and_writes_again() {
    let t = TestRack::new(&[]).await;
    let bucket = t.create_app("web", "R1", AppSpec::default()).await;
    t.write_env(&bucket, "R1", ENV_R1).await;
    t.write_env(&bucket, "R2", ENV_R2).await;
    t.rack.stage_release("web", &bucket, "R1").await.unwrap();
    t.counter
        .aws_deletion_rule
        .store(true, std::sync::atomic::Ordering::SeqCst);
    t.counter
        .delete_after_describe
        .store(true, std::sync::atomic::Ordering::SeqCst);

    let staged = t.rack.stage_release("web", &bucket, "R2").await.unwrap();

    let deleted = t.deletion_date("web").await;
    assert!(deleted.is_none(), "the secret was not restored");
    assert_eq!(
        t.read_version("web", &staged.version_id).await["MODE"],
        "two"
    );
}

#[tokio::test]
async fn a_secret_without_our_ownership_tag_is_refused_and_left_untouched() {
    let t = TestRack::new(&[]).await;
    let bucket = t.create_app("web", "R1", AppSpec::default()).await;
    t.write_env(&bucket, "R1", ENV_R1).await;
    t.secrets
        .create_secret()
        .name(t.secret_name("web"))
        .secret_string(r#"'{"K":"v"}'"#)
        .send()
        .await
        .unwrap();
    let before = t.all_versions("web").await;

    let err = t
        .rack
        .stage_release("web", &bucket, "R1")
        .await
        .unwrap_err();

    assert_eq!(err.kind(), Kind::Permanent);
    let message = err.to_string();
    assert!(message.contains(&t.secret_name("web")), "{message}");
    assert!(message.contains("ManagedBy=rack-secrets"), "{message}");
    assert_eq!(t.counter.writes(), 0);
    assert_eq!(t.all_versions("web").await, before);
}

/// Secrets Manager refuses values over 65,536 bytes; moto does not, so the limit is ours.
#[tokio::test]
async fn an_environment_too_large_for_a_secret_is_refused_without_any_write() {
    let t = TestRack::new(&[]).await;
    let bucket = t.create_app("web", "R1", AppSpec::default()).await;
    let one_big_value = format!("BIG={}\n", "x".repeat(70_000));
    let many_keys: String = (0..2000)
        .map(|i| format!("KEY_{i:04}={}\n", "v".repeat(40)))
        .collect();
    t.write_env(&bucket, "R1", &one_big_value).await;
    t.write_env(&bucket, "R2", &many_keys).await;

    for release in ["R1", "R2"] {
        let err = t
            .rack
            .stage_release("web", &bucket, release)
            .await
            .unwrap_err();
        let message = err.to_string();
        assert_eq!(err.kind(), Kind::Permanent);
        assert!(
            message.contains("app web") && message.contains("bytes"),
            "{message}"
        );
        assert!(!message.contains("xxxxxxxx") && !message.contains("vvvvvvvv"));
    }
    assert_eq!(t.counter.writes(), 0);
    assert!(!t.secret_exists("web").await);
}

/// moto decrypts with a disabled key and ignores key policies, so the refusal here is KMS's
/// answer to a data key it cannot unwrap (InvalidCiphertextException), as for a key of
/// another account.
#[tokio::test]
async fn a_data_key_kms_refuses_stages_nothing_and_names_the_app_and_release() {
    let t = TestRack::new(&[]).await;
    let bucket = t.create_app("web", "R1", AppSpec::default()).await;
    t.write_env(&bucket, "R1", ENV_R1).await;
    t.tamper_envelope(&bucket, "R1", "k", "bm90IGEga2V5IHRoaXMgcmFjayBjYW4gdXNl")
        .await;

    let err = t
        .rack
        .stage_release("web", &bucket, "R1")
        .await
        .unwrap_err();

    let message = err.to_string();
    assert!(message.contains("app web release R1"), "{message}");
    assert!(message.contains("KMS"), "{message}");
    assert_eq!(err.kind(), Kind::Permanent);
    assert!(!t.secret_exists("web").await);
}

#[tokio::test]
async fn an_envelope_that_will_not_open_is_never_read_as_plain_text() {
    let t = TestRack::new(&[]).await;
    let bucket = t.create_app("web", "R1", AppSpec::default()).await;
    t.write_env(&bucket, "R1", ENV_R1).await;
    // The same ciphertext under another nonce fails authentication.
    t.tamper_envelope(&bucket, "R1", "n", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
        .await;
    t.put_object(&bucket, "releases/R2/env", b"{ A=1\n".to_vec())
        .await;

    for release in ["R1", "R2"] {
        let err = t
            .rack
            .stage_release("web", &bucket, release)
            .await
            .unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains(&format!("app web release {release}")),
            "{message}"
        );
    }
    assert!(!t.secret_exists("web").await);
}

#[tokio::test]
async fn a_plain_text_env_file_is_staged_as_it_is() {
    let t = TestRack::new(&[]).await;
    let bucket = t.create_app("web", "R1", AppSpec::default()).await;
    t.put_object(&bucket, "releases/R1/env", b"A=1\r\nB= two \n".to_vec())
        .await;

    let staged = t.rack.stage_release("web", &bucket, "R1").await.unwrap();

    let value = t.read_version("web", &staged.version_id).await;
    assert_eq!(value["A"], "1");
    assert_eq!(value["B"], " two ");
}

#[tokio::test]
async fn promote_moves_awscurrent_to_the_staged_version_once() {
    let t = TestRack::new(&[]).await;
    let bucket = t.create_app("web", "R1", AppSpec::default()).await;
    t.write_env(&bucket, "R1", ENV_R1).await;
    t.write_env(&bucket, "R2", ENV_R2).await;
    let first = t.rack.stage_release("web", &bucket, "R1").await.unwrap();
    let second = t.rack.stage_release("web", &bucket, "R2").await.unwrap();

    assert!(t.rack.promote("web", &second.version_id).await.unwrap());
    let writes = t.counter.writes();
    assert!(!t.rack.promote("web", &second.version_id).await.unwrap());

    assert_eq!(t.counter.writes(), writes);
    assert_eq!(
        t.version_with("web", CURRENT).await,
        Some(second.version_id)
    );
    assert_eq!(
        t.version_with("web", "AWSPREVIOUS").await,
        Some(first.version_id)
    );
}

#[tokio::test]
async fn concurrent_first_stagings_of_one_app_end_with_one_secret_and_one_version() {
    let t = TestRack::new(&[]).await;
    let bucket = t.create_app("web", "R1", AppSpec::default()).await;
    t.write_env(&bucket, "R1", ENV_R1).await;

    let tasks: Vec<_> = (0..6)
        .map(|_| {
            let rack = t.rack.clone();
            let bucket = bucket.clone();
            tokio::spawn(async move { rack.stage_release("web", &bucket, "R1").await })
        })
        .collect();
    for task in tasks {
        let staged = task.await.unwrap().unwrap();
        assert_eq!(staged.version_id, version_of(ENV_R1));
    }

    assert_eq!(t.all_versions("web").await, [version_of(ENV_R1)]);
}
