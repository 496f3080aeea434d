//! One suite, run against every object store backend: a local folder (`file://`) and an
//! S3-compatible server (`s3://`, s3s-fs; see `support/objects.rs` and `support/s3s_fs.rs` for which).
//!
//! What the flusher and archiver rely on: put/get/range/delete, deleting a missing object is
//! fine, a 12 MiB streaming upload arrives byte-for-byte (CRC-32), an aborted upload leaves
//! nothing, and stores under different prefixes never see each other's keys. Malformed URLs
//! fail at open with an error naming `OBJECT_STORE_URL`, without touching the network.

#[path = "support/objects.rs"]
mod objects_support;
#[path = "support/s3s_fs.rs"]
mod s3s_fs;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use object_store::path::Path;

use buildlogs::stores::fault_injection::{Fault, FaultyObjectStore, Op};
use buildlogs::stores::objects::{ObjectStoreConfig, ObjectStoreError};
use buildlogs::traces::objects::{MultipartWriter, is_not_found};
use objects_support::TestObjects;

/// Runs each async test body against the local and the S3 backend.
macro_rules! on_both_object_stores {
    ($($name:ident),* $(,)?) => {
        mod local {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(&super::TestObjects::local()).await;
                }
            )*
        }
        mod s3 {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(&super::TestObjects::s3(stringify!($name))).await;
                }
            )*
        }
    };
}

on_both_object_stores!(
    put_then_get_returns_the_same_bytes,
    put_replaces_the_whole_object,
    get_range_returns_exactly_the_requested_bytes,
    get_of_a_missing_object_is_not_found,
    delete_removes_the_object,
    deleting_a_missing_object_is_ok,
    multipart_upload_of_12_mib_in_128_kib_pieces_round_trips,
    empty_multipart_upload_creates_an_empty_object,
    aborted_multipart_upload_leaves_nothing,
    a_writer_dropped_while_it_finishes_leaves_no_upload,
    stores_with_different_prefixes_do_not_see_each_others_keys,
);

fn key(s: &str) -> Path {
    Path::from(s)
}

/// Deterministic, non-repeating-looking bytes (a CRC over zeros would prove little).
fn pattern(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).max(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .collect()
}

async fn put_then_get_returns_the_same_bytes(objects: &TestObjects) {
    let opened = objects.open("logs");
    let store = opened.store.as_ref();
    let body = pattern(10_000, 1);
    store
        .put(&key("jobs/1/trace.log"), body.clone().into())
        .await
        .expect("put");
    let got = store.get(&key("jobs/1/trace.log")).await.expect("get");
    assert_eq!(got, Bytes::from(body), "{}", objects.kind);
    let meta = opened
        .raw
        .head(&key("jobs/1/trace.log"))
        .await
        .expect("head");
    assert_eq!(meta.size, 10_000);
}

async fn put_replaces_the_whole_object(objects: &TestObjects) {
    let opened = objects.open("");
    let store = opened.store.as_ref();
    store
        .put(&key("a"), Bytes::from_static(b"a long first version"))
        .await
        .expect("put 1");
    store
        .put(&key("a"), Bytes::from_static(b"short"))
        .await
        .expect("put 2");
    assert_eq!(
        store.get(&key("a")).await.expect("get"),
        Bytes::from_static(b"short")
    );
}

async fn get_range_returns_exactly_the_requested_bytes(objects: &TestObjects) {
    let opened = objects.open("ranges");
    let store = opened.store.as_ref();
    let body = pattern(1 << 20, 2);
    store
        .put(&key("obj"), body.clone().into())
        .await
        .expect("put");
    for range in [
        0..1,
        0..1024,
        1000..2000,
        524_287..524_289,
        (1 << 20) - 7..1 << 20,
    ] {
        let got = store
            .get_range(&key("obj"), range.clone())
            .await
            .unwrap_or_else(|e| panic!("{} range {range:?}: {e}", objects.kind));
        let want = &body[range.start as usize..range.end as usize];
        assert_eq!(&got[..], want, "{} range {range:?}", objects.kind);
    }
    // A range running past the end is cut at the end (as HTTP ranges are).
    let tail = store
        .get_range(&key("obj"), (1 << 20) - 10..(1 << 20) + 100)
        .await
        .expect("range past the end");
    assert_eq!(&tail[..], &body[(1 << 20) - 10..]);
}

async fn get_of_a_missing_object_is_not_found(objects: &TestObjects) {
    let opened = objects.open("p");
    let store = opened.store.as_ref();
    let err = store
        .get(&key("nope/never"))
        .await
        .expect_err("missing object");
    assert!(is_not_found(&err), "{}: {err:?}", objects.kind);
    let err = store
        .get_range(&key("nope/never"), 0..10)
        .await
        .expect_err("missing object");
    assert!(is_not_found(&err), "{}: {err:?}", objects.kind);
}

async fn delete_removes_the_object(objects: &TestObjects) {
    let opened = objects.open("del");
    let store = opened.store.as_ref();
    store
        .put(&key("x/y/z"), Bytes::from_static(b"bye"))
        .await
        .expect("put");
    store.delete(&key("x/y/z")).await.expect("delete");
    let err = store.get(&key("x/y/z")).await.expect_err("deleted");
    assert!(is_not_found(&err), "{}: {err:?}", objects.kind);
    // Deleting again is what a retried job does.
    store.delete(&key("x/y/z")).await.expect("delete again");
}

async fn deleting_a_missing_object_is_ok(objects: &TestObjects) {
    let opened = objects.open("del");
    opened
        .store
        .delete(&key("never/existed"))
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", objects.kind));
}

async fn multipart_upload_of_12_mib_in_128_kib_pieces_round_trips(objects: &TestObjects) {
    const TOTAL: usize = 12 * 1024 * 1024;
    const PIECE: usize = 128 * 1024;
    let opened = objects.open("archives");
    let store = opened.store.as_ref();
    let body = pattern(TOTAL, 3);
    let path = key("jobs/42/trace.log");

    let mut writer = MultipartWriter::start(store, &path).await.expect("start");
    for piece in body.chunks(PIECE) {
        writer
            .write(Bytes::copy_from_slice(piece))
            .await
            .expect("write");
    }
    assert_eq!(writer.written(), TOTAL as u64);
    writer.finish().await.expect("finish");

    let got = store.get(&path).await.expect("get");
    assert_eq!(got.len(), TOTAL, "{}", objects.kind);
    assert_eq!(
        crc32fast::hash(&got),
        crc32fast::hash(&body),
        "{}: CRC-32 differs",
        objects.kind
    );
    // Part boundaries (5 MiB) join seamlessly.
    let boundary = 5 * 1024 * 1024;
    let around = store
        .get_range(&path, boundary - 3..boundary + 3)
        .await
        .expect("range across a part boundary");
    assert_eq!(
        &around[..],
        &body[boundary as usize - 3..boundary as usize + 3]
    );
}

async fn empty_multipart_upload_creates_an_empty_object(objects: &TestObjects) {
    let opened = objects.open("");
    let store = opened.store.as_ref();
    let writer = MultipartWriter::start(store, &key("empty"))
        .await
        .expect("start");
    writer.finish().await.expect("finish");
    assert!(store.get(&key("empty")).await.expect("get").is_empty());
}

async fn aborted_multipart_upload_leaves_nothing(objects: &TestObjects) {
    let opened = objects.open("aborts");
    let store = opened.store.as_ref();
    let mut writer = MultipartWriter::start(store, &key("half"))
        .await
        .expect("start");
    // More than one part, so some parts are already uploaded when we abort.
    for piece in pattern(6 * 1024 * 1024, 4).chunks(256 * 1024) {
        writer
            .write(Bytes::copy_from_slice(piece))
            .await
            .expect("write");
    }
    writer.abort().await.expect("abort");
    let err = store.get(&key("half")).await.expect_err("aborted");
    assert!(is_not_found(&err), "{}: {err:?}", objects.kind);
    let listed: Vec<_> = opened.raw.list(None).try_collect().await.expect("list");
    assert!(listed.is_empty(), "{}: {listed:?}", objects.kind);
}

/// A job timeout or a cancelled task can drop an archive while `finish` waits for its last
/// parts: the upload must be aborted then too, not left stored (and billed) until a lifecycle
/// rule removes it.
async fn a_writer_dropped_while_it_finishes_leaves_no_upload(objects: &TestObjects) {
    let opened = objects.open("dropped");
    let (store, switch) = FaultyObjectStore::wrap(opened.store.clone());
    let path = key("late");
    let mut writer = MultipartWriter::start(store.as_ref(), &path)
        .await
        .expect("start");
    // The first part is stored; the rest hang, so `finish` waits on them.
    switch.set(Fault::hang().only(&[Op::PutPart]).after(1));
    for piece in pattern(11 * 1024 * 1024, 5).chunks(128 * 1024) {
        writer
            .write(Bytes::copy_from_slice(piece))
            .await
            .expect("write");
    }
    let finishing = tokio::spawn(writer.finish());
    switch.wait_hanging(1).await;
    finishing.abort();
    assert!(finishing.await.expect_err("cancelled").is_cancelled());
    switch.heal();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !objects.pending_uploads().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "{}: the dropped upload is still pending: {:?}",
            objects.kind,
            objects.pending_uploads()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(switch.calls(Op::AbortMultipart), 1, "{}", objects.kind);
    assert_eq!(switch.calls(Op::CompleteMultipart), 0, "{}", objects.kind);
    let err = opened
        .store
        .get(&path)
        .await
        .expect_err("nothing at the key");
    assert!(is_not_found(&err), "{}: {err:?}", objects.kind);
}

async fn stores_with_different_prefixes_do_not_see_each_others_keys(objects: &TestObjects) {
    let a = objects.open("tenant-a");
    let b = objects.open("tenant-b");
    let parent = objects.open("");
    let k = key("jobs/1/trace.log");

    a.store
        .put(&k, Bytes::from_static(b"from a"))
        .await
        .expect("put a");
    let err = b.store.get(&k).await.expect_err("b must not see a's key");
    assert!(is_not_found(&err), "{}: {err:?}", objects.kind);

    b.store
        .put(&k, Bytes::from_static(b"from b"))
        .await
        .expect("put b");
    assert_eq!(a.store.get(&k).await.expect("a"), "from a");
    assert_eq!(b.store.get(&k).await.expect("b"), "from b");

    // Listing is scoped too, and keys come back relative to the store's prefix.
    let listed: Vec<String> = a
        .raw
        .list(None)
        .map_ok(|m| m.location.to_string())
        .try_collect()
        .await
        .expect("list a");
    assert_eq!(
        listed,
        vec!["jobs/1/trace.log".to_owned()],
        "{}",
        objects.kind
    );

    // The prefix is really part of the key: a store one level up sees both.
    let mut all: Vec<String> = parent
        .raw
        .list(None)
        .map_ok(|m| m.location.to_string())
        .try_collect()
        .await
        .expect("list parent");
    all.sort();
    assert_eq!(
        all,
        vec!["tenant-a/jobs/1/trace.log", "tenant-b/jobs/1/trace.log"],
        "{}",
        objects.kind
    );

    b.store.delete(&k).await.expect("delete b");
    assert_eq!(a.store.get(&k).await.expect("a after b's delete"), "from a");
}

fn open_error(url: &str) -> ObjectStoreError {
    match ObjectStoreConfig::new(Some(url), "/nonexistent").open() {
        Ok(opened) => panic!("{url} opened as {opened:?}"),
        Err(e) => e,
    }
}

#[test]
fn malformed_or_unsupported_urls_fail_at_open_naming_the_setting() {
    let cases = [
        ("gs://bucket/logs", "unsupported scheme \"gs\""),
        ("http://example.com/logs", "unsupported scheme \"http\""),
        ("/var/lib/buildlogs", "not a URL"),
        ("s3://", "missing bucket"),
        ("s3:///logs", "missing bucket"),
        ("s3://bucket:9000/logs", "no port"),
        ("s3://bucket/logs?region=eu", "query"),
        ("s3://KEY:hunter2@bucket/logs", "credentials"),
        ("file://server/share", "three slashes"),
        ("file:///", "root"),
        ("file:relative/path", "absolute path"),
    ];
    for (url, expected) in cases {
        let message = open_error(url).to_string();
        assert!(message.starts_with("OBJECT_STORE_URL"), "{url}: {message}");
        assert!(message.contains(expected), "{url}: {message}");
        assert!(
            !message.contains("hunter2"),
            "{url}: leaks a secret: {message}"
        );
    }
}

#[test]
fn s3_urls_open_without_touching_the_network() {
    // An endpoint nothing listens on: opening must still succeed (errors show on first use).
    let opened = ObjectStoreConfig::new(Some("s3://bucket/some/prefix/"), "/nonexistent")
        .with_s3(
            object_store::aws::AmazonS3ConfigKey::Endpoint,
            "http://127.0.0.1:9",
        )
        .open()
        .expect("open");
    assert_eq!(opened.prefix.as_ref(), "some/prefix");
    assert_eq!(opened.description, "s3://bucket/some/prefix/");
}

#[test]
fn no_url_means_a_folder_in_the_data_dir() {
    let dir = tempfile::tempdir().expect("temp dir");
    let opened = ObjectStoreConfig::new(None, dir.path())
        .open()
        .expect("open default");
    assert!(dir.path().join("objects").is_dir());
    assert!(opened.prefix.as_ref().is_empty());
}
