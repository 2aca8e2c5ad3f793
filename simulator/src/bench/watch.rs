//! Bench subscribers: WebSocket clients on the `fleet` topic that time each position event
//! from the moment its POST was sent.

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use chrono::DateTime;
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use reqwest::Url;
use serde::Deserialize;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

use super::load::SentLog;
use super::new_histogram;

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Connecting, the hello and the subscription must each come within this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The server drops a connection that has sent nothing for 60 s.
const KEEPALIVE: Duration = Duration::from_secs(20);

/// When the last position frame arrived at any subscriber, in µs since the bench epoch; lets
/// the bench stop listening once deliveries have died down.
#[derive(Debug)]
pub struct Progress {
    epoch: Instant,
    last_delivery_us: AtomicU64,
}

impl Progress {
    pub fn new(epoch: Instant) -> Self {
        Self {
            epoch,
            last_delivery_us: AtomicU64::new(0),
        }
    }

    fn delivered(&self, at: Instant) {
        let us = u64::try_from(at.duration_since(self.epoch).as_micros()).unwrap_or(u64::MAX);
        self.last_delivery_us.fetch_max(us, Ordering::Relaxed);
    }

    /// The last delivery, if any.
    pub fn last_delivery(&self) -> Option<Instant> {
        match self.last_delivery_us.load(Ordering::Relaxed) {
            0 => None,
            us => Some(self.epoch + Duration::from_micros(us)),
        }
    }
}

/// What one subscriber saw.
#[derive(Debug)]
pub struct WatchStats {
    /// POST sent → frame received, in µs, for frames matched to a send.
    pub latency_us: Histogram<u64>,
    pub deliveries: u64,
    /// Position frames that match no recorded send (too old, or not posted by this bench).
    pub unmatched: u64,
    pub error_frames: u64,
    /// Why the server closed the connection early, if it did.
    pub closed: Option<String>,
}

#[derive(Deserialize)]
struct Frame<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    topic: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    data: Option<PositionData<'a>>,
    #[serde(default, borrow)]
    code: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct PositionData<'a> {
    vehicle_id: i64,
    #[serde(borrow)]
    recorded_at: Cow<'a, str>,
}

/// Opens a connection, waits for the hello and subscribes to `fleet`.
pub async fn subscribe(url: Url) -> anyhow::Result<Socket> {
    // The URL carries the session token, so it never goes into an error message.
    let (mut ws, _) = tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        tokio_tungstenite::connect_async(url.as_str()),
    )
    .await
    .context("WebSocket connect timed out")?
    .context("WebSocket connect failed")?;
    expect_frame(&mut ws, "hello").await?;
    let subscribe = r#"{"type":"subscribe","topic":"fleet","ref":"bench"}"#;
    ws.send(Message::text(subscribe))
        .await
        .context("cannot send subscribe")?;
    expect_frame(&mut ws, "subscribed").await?;
    Ok(ws)
}

async fn expect_frame(ws: &mut Socket, wanted: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
    loop {
        let message = tokio::time::timeout_at(deadline, ws.next())
            .await
            .with_context(|| format!("no {wanted:?} frame within {HANDSHAKE_TIMEOUT:?}"))?;
        let text = match message {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(frame))) => bail!("server closed the WebSocket: {frame:?}"),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(e).context("WebSocket failed"),
            None => bail!("server closed the WebSocket"),
        };
        let frame: Frame<'_> = serde_json::from_str(text.as_str())
            .with_context(|| format!("not a protocol frame: {}", truncate(text.as_str())))?;
        match frame.kind.as_ref() {
            kind if kind == wanted => return Ok(()),
            "error" => bail!(
                "server refused: {}",
                frame.code.as_deref().unwrap_or("unknown error")
            ),
            _ => {}
        }
    }
}

/// Reads frames until `stop`, timing every position event against its send.
pub async fn watch(
    mut ws: Socket,
    sent: Arc<SentLog>,
    progress: Arc<Progress>,
    stop: CancellationToken,
) -> WatchStats {
    let mut stats = WatchStats {
        latency_us: new_histogram(),
        deliveries: 0,
        unmatched: 0,
        error_frames: 0,
        closed: None,
    };
    let mut keepalive = tokio::time::interval_at(Instant::now() + KEEPALIVE, KEEPALIVE);
    loop {
        tokio::select! {
            biased;
            () = stop.cancelled() => break,
            _ = keepalive.tick() => {
                if let Err(e) = ws.send(Message::text(r#"{"type":"ping"}"#)).await {
                    stats.closed = Some(format!("send failed: {e}"));
                    break;
                }
            }
            message = ws.next() => {
                let received = Instant::now();
                match message {
                    Some(Ok(Message::Text(text))) => {
                        handle(text.as_str(), received, &sent, &progress, &mut stats);
                    }
                    Some(Ok(Message::Close(frame))) => {
                        stats.closed = Some(match frame {
                            Some(f) => format!("closed by server: {} {}", u16::from(f.code), f.reason),
                            None => "closed by server".into(),
                        });
                        break;
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        stats.closed = Some(format!("connection failed: {e}"));
                        break;
                    }
                    None => {
                        stats.closed = Some("connection ended".into());
                        break;
                    }
                }
            }
        }
    }
    // A polite close; the server may already be gone, which is fine.
    let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
    stats
}

fn handle(
    text: &str,
    received: Instant,
    sent: &SentLog,
    progress: &Progress,
    stats: &mut WatchStats,
) {
    let Ok(frame) = serde_json::from_str::<Frame<'_>>(text) else {
        stats.error_frames += 1;
        return;
    };
    match frame.kind.as_ref() {
        "position" if frame.topic.as_deref() == Some("fleet") => {
            stats.deliveries += 1;
            progress.delivered(received);
            let sent_at = frame.data.and_then(|d| {
                let ms = DateTime::parse_from_rfc3339(&d.recorded_at)
                    .ok()?
                    .timestamp_millis();
                sent.sent_at(d.vehicle_id, ms)
            });
            match sent_at {
                Some(at) => {
                    let us = u64::try_from(received.saturating_duration_since(at).as_micros())
                        .unwrap_or(u64::MAX);
                    stats.latency_us.saturating_record(us.max(1));
                }
                None => stats.unmatched += 1,
            }
        }
        "error" => {
            stats.error_frames += 1;
            tracing::debug!(
                "subscriber got an error frame: {}",
                frame.code.as_deref().unwrap_or("?")
            );
        }
        _ => {}
    }
}

fn truncate(text: &str) -> String {
    text.chars().take(120).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn position_frames_are_matched_to_their_send() {
        let sent = SentLog::new([7]);
        let epoch = Instant::now();
        sent.record_for_test(7, 1_763_806_530_250, epoch);
        let progress = Progress::new(epoch);
        let mut stats = WatchStats {
            latency_us: new_histogram(),
            deliveries: 0,
            unmatched: 0,
            error_frames: 0,
            closed: None,
        };
        let frame = r#"{"type":"position","topic":"fleet","seq":5,"data":{"vehicle_id":7,
            "shipment_id":null,"lat":48.1,"lon":11.5,"recorded_at":"2025-11-22T10:15:30.250Z",
            "received_at":"2025-11-22T10:15:30.412Z","late":false}}"#;
        handle(
            frame,
            epoch + Duration::from_millis(3),
            &sent,
            &progress,
            &mut stats,
        );
        assert_eq!((stats.deliveries, stats.unmatched), (1, 0));
        assert!(stats.latency_us.max() >= 3_000);

        // Another offset spelling of the same instant still matches.
        let same = frame.replace("10:15:30.250Z", "11:15:30.250+01:00");
        handle(&same, epoch, &sent, &progress, &mut stats);
        assert_eq!(stats.unmatched, 0);

        let unknown = frame.replace("\"vehicle_id\":7", "\"vehicle_id\":8");
        handle(&unknown, epoch, &sent, &progress, &mut stats);
        assert_eq!((stats.deliveries, stats.unmatched), (3, 1));

        handle(r#"{"type":"pong"}"#, epoch, &sent, &progress, &mut stats);
        handle("not json", epoch, &sent, &progress, &mut stats);
        assert_eq!(stats.deliveries, 3);
        assert_eq!(stats.error_frames, 1);
        assert!(progress.last_delivery().is_some());
    }
}
