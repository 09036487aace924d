//! Sessions' transcripts: what the agents' hosts upload (`crate::transcript` parses it on
//! their side), stored bounded and paged by sequence number.
//!
//! Storage: per session one [`State`] record (`TranscriptState`, id = the session id: last and
//! first kept `seq`, the file followed and how far, malformed lines) and the entries in pages of
//! [`PAGE`] (`TranscriptPages`, id `<session>#<n>` holding `seq` `n*PAGE+1 ..= (n+1)*PAGE`).
//! Any page is found by arithmetic, so a page of the transcript costs one or a few reads
//! however long it is, on either backend; an upload rewrites only the last page or two. Past
//! [`MAX_ENTRIES`] the oldest whole pages are deleted.

use maestro_protocol::{
    SessionTranscript, TranscriptEntry, TranscriptPage, TranscriptSource, TranscriptUpload,
};
use serde::{Deserialize, Serialize};

use super::{Domain, check_id, load_session};
use crate::error::{Error, Result};
use crate::ports::{Collection, Reader, ReaderExt, Txn, TxnExt, transact};

/// Entries per stored page.
pub const PAGE: u64 = 50;
/// Entries kept per session; older ones are dropped a page at a time.
pub const MAX_ENTRIES: u64 = 10_000;
/// Entries one upload may carry.
pub const MAX_UPLOAD_ENTRIES: usize = 500;
/// Longest `path` of an upload, in bytes.
pub const MAX_PATH_BYTES: usize = 4096;
/// Entries a page request returns by default, and at most.
pub const DEFAULT_LIMIT: u64 = 100;
pub const MAX_LIMIT: u64 = 500;
/// Largest `session:transcript` event payload's entries (JSON bytes); a larger batch is
/// announced without its entries (`truncated`), and clients fetch it.
pub const MAX_EVENT_BYTES: usize = 64 * 1024;

/// The per-session record.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct State {
    /// `seq` of the newest entry (0: none yet).
    last: u64,
    /// `seq` of the oldest entry kept.
    first: u64,
    malformed: u64,
    source: Option<TranscriptSource>,
}

fn page_of(seq: u64) -> u64 {
    (seq - 1) / PAGE
}

fn page_id(session: &str, page: u64) -> String {
    format!("{session}#{page}")
}

/// Which entries a page request wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    /// Those after this `seq`, oldest first.
    After(u64),
    /// The newest ones before this `seq`.
    Before(u64),
    /// The newest ones.
    Tail,
}

impl Domain {
    /// Stores entries a host parsed from the session's transcript file and announces them.
    pub async fn append_transcript(
        &self,
        session_id: String,
        mut upload: TranscriptUpload,
    ) -> Result<TranscriptPage> {
        check_id("sessionId", &session_id)?;
        if upload.path.is_empty() || upload.path.len() > MAX_PATH_BYTES {
            return Err(Error::validation(format!(
                "path must be 1 to {MAX_PATH_BYTES} bytes"
            )));
        }
        if upload.end < upload.start {
            return Err(Error::validation("end must not be before start"));
        }
        if upload.entries.len() > MAX_UPLOAD_ENTRIES {
            return Err(Error::validation(format!(
                "at most {MAX_UPLOAD_ENTRIES} entries per upload"
            )));
        }
        for e in &mut upload.entries {
            crate::transcript::clamp(e);
        }
        transact(&*self.store, move |tx| {
            let session = load_session(tx, &session_id)?;
            let mut state: State = tx
                .get(Collection::TranscriptState, &session_id)?
                .unwrap_or_default();
            let retry = state
                .source
                .as_ref()
                .is_some_and(|s| s.path == upload.path && upload.end <= s.offset);
            if retry {
                return page_from(tx, &session_id, &state, Window::After(state.last), 0);
            }
            let from = state.last + 1;
            let mut entries = upload.entries.clone();
            for (i, e) in entries.iter_mut().enumerate() {
                e.seq = from + i as u64;
            }
            append_pages(tx, &session_id, &entries)?;
            state.last += entries.len() as u64;
            if state.first == 0 && state.last > 0 {
                state.first = 1;
            }
            trim(tx, &session_id, &mut state);
            state.malformed += upload.malformed;
            state.source = Some(TranscriptSource {
                path: upload.path.clone(),
                offset: upload.end,
            });
            tx.put(
                Collection::TranscriptState,
                &session_id,
                Some(&session.project_id),
                &state,
            );
            if !entries.is_empty() {
                let size: usize = entries
                    .iter()
                    .map(|e| serde_json::to_vec(e).map_or(0, |b| b.len()))
                    .sum();
                let truncated = size > MAX_EVENT_BYTES;
                let event = SessionTranscript {
                    session_id: session_id.clone(),
                    project_id: session.project_id.clone(),
                    from,
                    to: state.last,
                    entries: if truncated { Vec::new() } else { entries },
                    truncated,
                };
                tx.emit(
                    &session.project_id,
                    "session:transcript",
                    &event,
                    Some(&session_id),
                );
            }
            page_from(tx, &session_id, &state, Window::After(state.last), 0)
        })
        .await
    }

    /// One page of a session's transcript, oldest first; `limit` defaults to
    /// [`DEFAULT_LIMIT`] and may be at most [`MAX_LIMIT`] (0 answers only the totals).
    pub fn transcript_page(
        &self,
        session_id: &str,
        window: Window,
        limit: Option<u64>,
    ) -> Result<TranscriptPage> {
        check_id("sessionId", session_id)?;
        let limit = limit.unwrap_or(DEFAULT_LIMIT);
        if limit > MAX_LIMIT {
            return Err(Error::validation(format!(
                "limit must be at most {MAX_LIMIT}"
            )));
        }
        let mut r = self.reader()?;
        load_session(&mut *r, session_id)?;
        let state: State = r
            .get(Collection::TranscriptState, session_id)?
            .unwrap_or_default();
        page_from(&mut *r, session_id, &state, window, limit)
    }
}

/// Adds `entries` (numbered already) to their pages.
fn append_pages(tx: &mut dyn Txn, session: &str, entries: &[TranscriptEntry]) -> Result<()> {
    let mut i = 0;
    while i < entries.len() {
        let page = page_of(entries[i].seq);
        let n = entries[i..]
            .iter()
            .take_while(|e| page_of(e.seq) == page)
            .count();
        let id = page_id(session, page);
        let mut stored: Vec<TranscriptEntry> = tx
            .get(Collection::TranscriptPages, &id)?
            .unwrap_or_default();
        stored.extend_from_slice(&entries[i..i + n]);
        tx.put(Collection::TranscriptPages, &id, None, &stored);
        i += n;
    }
    Ok(())
}

/// Drops the oldest whole pages while more than [`MAX_ENTRIES`] are kept.
fn trim(tx: &mut dyn Txn, session: &str, state: &mut State) {
    if state.last < state.first || state.last - state.first < MAX_ENTRIES {
        return;
    }
    let keep_from = state.last - MAX_ENTRIES + 1;
    for page in page_of(state.first)..page_of(keep_from) {
        tx.delete(Collection::TranscriptPages, &page_id(session, page));
    }
    state.first = page_of(keep_from) * PAGE + 1;
}

/// Deletes a session's transcript (with the session).
pub(crate) fn delete_all(tx: &mut dyn Txn, session: &str) -> Result<()> {
    let Some(state) = tx.get::<State>(Collection::TranscriptState, session)? else {
        return Ok(());
    };
    if state.last > 0 {
        for page in page_of(state.first.max(1))..=page_of(state.last) {
            tx.delete(Collection::TranscriptPages, &page_id(session, page));
        }
    }
    tx.delete(Collection::TranscriptState, session);
    Ok(())
}

fn page_from(
    r: &mut (impl Reader + ?Sized),
    session: &str,
    state: &State,
    window: Window,
    limit: u64,
) -> Result<TranscriptPage> {
    let mut page = TranscriptPage {
        entries: Vec::new(),
        first: state.first,
        last: state.last,
        has_more: false,
        malformed: state.malformed,
        source: state.source.clone(),
    };
    if state.last == 0 {
        return Ok(page);
    }
    let (from, to) = match window {
        Window::After(after) => {
            let from = (after + 1).max(state.first);
            let to = from.saturating_add(limit).saturating_sub(1).min(state.last);
            page.has_more = to < state.last;
            (from, to)
        }
        Window::Before(before) => {
            let to = before.saturating_sub(1).min(state.last);
            let from = (to + 1).saturating_sub(limit).max(state.first);
            page.has_more = from > state.first && to >= state.first;
            (from, to)
        }
        Window::Tail => {
            let from = (state.last + 1).saturating_sub(limit).max(state.first);
            page.has_more = from > state.first;
            (from, state.last)
        }
    };
    if limit == 0 || from > to || to == 0 {
        return Ok(page);
    }
    for p in page_of(from)..=page_of(to) {
        let stored: Vec<TranscriptEntry> = r
            .get(Collection::TranscriptPages, &page_id(session, p))?
            .unwrap_or_default();
        page.entries
            .extend(stored.into_iter().filter(|e| (from..=to).contains(&e.seq)));
    }
    Ok(page)
}
