use tonic::Code;

use wavalidate::pb::{self, NumberStatus};
use wavalidate_test_support::*;

#[tokio::test]
async fn watch_streams_each_result_once_as_it_is_written_then_completes() {
    // One worker, 100 numbers a call, 300 ms a call: three visible steps.
    let app = spawn_app_with(|s| {
        s.checker.simulated.latency = ms(300);
        s.workers.loops = 1;
    })
    .await;
    let (_, key) = app.account(1000).await;
    let mut client = app.client().await;
    let sub = submit(&mut client, &key, &us_numbers(0, 300)).await;

    let mut stream = open_watch(&mut client, &key, &sub.batch_id).await;
    let first = stream.message().await.unwrap().expect("a first event");
    // The first result arrives while most of the batch is still being checked.
    let progress = poll(&mut client, &key, &sub.batch_id).await;
    assert!(
        progress.pending > 0,
        "the first result came only after the whole batch"
    );
    assert!(matches!(
        first.event,
        Some(pb::watch_batch_response::Event::Result(_))
    ));

    let mut results = vec![];
    if let Some(pb::watch_batch_response::Event::Result(r)) = first.event {
        results.push(r);
    }
    let mut completed = None;
    while let Some(msg) = stream.message().await.expect("stream ends OK") {
        match msg.event.unwrap() {
            pb::watch_batch_response::Event::Result(r) => results.push(r),
            pb::watch_batch_response::Event::Completed(c) => completed = Some(c),
        }
    }
    assert_each_index_once(&results, 300);
    let completed = completed.expect("completed event");
    assert_eq!(
        (
            completed.total_numbers,
            completed.completed,
            completed.failed
        ),
        (300, 300, 0)
    );
    for r in &results {
        assert_ne!(r.status, NumberStatus::Pending as i32);
        assert!(r.checked_at.is_some());
    }
}

#[tokio::test]
async fn results_reach_watchers_in_the_workers_process_without_a_re_read() {
    // No periodic re-read, and the process skips reading back its own notifications:
    // the workers hand what they commit to the hub themselves.
    let app = spawn_app_with(|s| {
        s.checker.simulated.latency = ms(200);
        s.workers.loops = 1;
        s.api.watch_backstop = ms(600000);
    })
    .await;
    let (_, key) = app.account(1000).await;
    let mut client = app.client().await;
    let sub = submit(&mut client, &key, &us_numbers(0, 300)).await;
    let (results, completed) =
        tokio::time::timeout(DEADLINE, watch_all(&mut client, &key, &sub.batch_id))
            .await
            .expect("every result streamed without a re-read");
    assert_each_index_once(&results, 300);
    assert_eq!(completed.completed, 300);
}

#[tokio::test]
async fn watching_a_completed_batch_replays_everything_and_ends() {
    let app = spawn_app().await;
    let (_, key) = app.account(100).await;
    let mut client = app.client().await;
    let mut numbers = us_numbers(0, 20);
    numbers.push("garbage".into());
    let sub = submit(&mut client, &key, &numbers).await;
    let polled = wait_completed(&mut client, &key, &sub.batch_id).await;

    let (results, completed) = watch_all(&mut client, &key, &sub.batch_id).await;
    assert_eq!(
        results, polled.results,
        "replay in index order, same as poll"
    );
    assert_eq!(
        (
            completed.total_numbers,
            completed.completed,
            completed.failed
        ),
        (21, 21, 0)
    );
}

#[tokio::test]
async fn many_watchers_of_one_batch_each_see_everything() {
    let app = spawn_app_with(|s| {
        s.checker.simulated.latency = ms(50);
        s.workers.loops = 2;
    })
    .await;
    let (_, key) = app.account(1000).await;
    let mut client = app.client().await;
    let sub = submit(&mut client, &key, &us_numbers(0, 500)).await;
    let mut watchers = Vec::new();
    for _ in 0..20 {
        let mut c = app.client().await;
        let (key, id) = (key.clone(), sub.batch_id.clone());
        watchers.push(tokio::spawn(
            async move { watch_all(&mut c, &key, &id).await },
        ));
    }
    for w in watchers {
        let (results, completed) = w.await.unwrap();
        assert_each_index_once(&results, 500);
        assert_eq!(completed.completed + completed.failed, 500);
    }
}

#[tokio::test]
async fn a_watcher_that_stops_reading_is_closed_and_frees_its_resources() {
    let app = spawn_app_with(|s| {
        s.api.watch_stall = secs(1);
    })
    .await;
    let (_, key) = app.account(1000).await;
    // A client with the HTTP/2 windows of the spec (64 KiB), not hyper's generous ones.
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", app.addr))
        .unwrap()
        .initial_stream_window_size(65_535)
        .initial_connection_window_size(65_535)
        .connect()
        .await
        .unwrap();
    let mut client =
        wavalidate::pb::wa_validation_service_client::WaValidationServiceClient::new(channel);
    // 1,000 long invalid entries: done at once, and far more than the stream's buffers hold.
    let numbers: Vec<String> = (0..1000)
        .map(|i| format!("{}{i:04}", "x".repeat(240)))
        .collect();
    let sub = submit(&mut client, &key, &numbers).await;
    let mut stream = open_watch(&mut client, &key, &sub.batch_id).await;
    wait_until("the watch to start", || async { app.active_watches() == 1 }).await;
    wait_until("the stalled watch to be closed", || async {
        app.active_watches() == 0
    })
    .await;

    let mut received = 0;
    let status = loop {
        match stream.message().await {
            Ok(Some(_)) => received += 1,
            Ok(None) => panic!("the stream ended without saying why"),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        received < 1000,
        "only what was buffered arrives: {received}"
    );
}

#[tokio::test]
async fn a_client_that_disconnects_mid_stream_frees_its_watch() {
    let app = spawn_app_with(|s| {
        s.checker.simulated.latency = ms(600000);
        s.workers.shutdown_grace = secs(0);
    })
    .await;
    let (_, key) = app.account(10).await;
    let mut client = app.client().await;
    let sub = submit(&mut client, &key, &["+14155552671".into(), "junk".into()]).await;
    let mut watcher = app.client().await;
    let mut stream = open_watch(&mut watcher, &key, &sub.batch_id).await;
    stream
        .message()
        .await
        .unwrap()
        .expect("the invalid entry's result");
    wait_until("the watch to be open", || async {
        app.active_watches() == 1
    })
    .await;
    drop(stream);
    drop(watcher);
    wait_until("the watch task to notice and end", || async {
        app.active_watches() == 0
    })
    .await;
}
