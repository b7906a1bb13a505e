//! `kcap status` and `kcap inspect <id>`: what the local finalizers are doing.

use crate::config::now_ms;
use crate::ids::SessionId;
use crate::machine::{Millis, Outcome, ParkReason, Phase};
use crate::store::{MachineRecord, Store};

/// Why a finalizer parked, for people.
pub fn park_reason(reason: &ParkReason) -> String {
    match reason {
        ParkReason::Unreachable { last_error } => format!("server unreachable: {last_error}"),
        // A hostile or broken transcript (a symlink, a FIFO, ...) is refused on this machine,
        // not by the server: saying "server refused" sends the user to the wrong place.
        ParkReason::Refused { last_error } => match last_error.strip_prefix(crate::effects::open::REFUSED) {
            Some(why) => format!(
                "transcript refused on this machine, nothing read from it or sent: {why}; \
                 replace it with the regular file the agent writes"
            ),
            None => format!("server refused: {last_error}"),
        },
    }
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` from epoch milliseconds (civil-from-days, proleptic Gregorian).
pub fn iso_time(ms: Millis) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

fn lease_text(record: &MachineRecord) -> String {
    match record.lease {
        Some(lease) if lease.is_live(now_ms()) => format!("pid {}", lease.holder.pid),
        _ => "-".into(),
    }
}

/// `in 3m 20s` / `now` from a time in the future.
fn until(at: Millis, now: Millis) -> String {
    if at <= now {
        return "now".into();
    }
    let secs = (at - now).div_ceil(1000);
    match secs {
        s if s < 60 => format!("in {s}s"),
        s if s < 3600 => format!("in {}m {}s", s / 60, s % 60),
        s => format!("in {}h {}m", s / 3600, s % 3600 / 60),
    }
}

/// Why a parked machine waits and when it is retried, or `None` when it is not parked.
fn parked_note(record: &MachineRecord, now: Millis) -> Option<(String, Millis)> {
    match record.state().0.phase {
        Phase::Parked {
            ref reason,
            retry_at,
            ..
        } => Some((park_reason(reason), retry_at)).map(|(why, at)| {
            (
                format!(
                    "{why}; retried by the next hook's sweep after {} ({}), or now with `kcap finalize --resume`",
                    iso_time(at),
                    until(at, now)
                ),
                at,
            )
        }),
        _ => None,
    }
}

/// `kcap status`: every local finalizer, and for a parked one why and until when.
pub fn status(store: &Store, json: bool) -> Result<String, String> {
    let records = store.all_latest_machines().map_err(|e| e.to_string())?;
    if json {
        let rows: Vec<_> = records
            .iter()
            .map(|r| {
                let (state, _) = r.state();
                serde_json::json!({
                    "session": r.meta.session,
                    "generation": r.meta.generation,
                    "phase": state.phase,
                    "watermark": r.local_watermark(),
                    "spawned_at": iso_time(r.meta.spawned_at),
                    "last_change": r.log.last().map(|l| iso_time(l.at)),
                    "running_pid": r.lease.filter(|l| l.is_live(now_ms())).map(|l| l.holder.pid),
                    "parked_reason": match &state.phase {
                        Phase::Parked { reason, .. } => Some(park_reason(reason)),
                        _ => None,
                    },
                    "retry_at": match &state.phase {
                        Phase::Parked { retry_at, .. } => Some(iso_time(*retry_at)),
                        _ => None,
                    },
                })
            })
            .collect();
        return serde_json::to_string_pretty(&rows).map_err(|e| e.to_string());
    }
    if records.is_empty() {
        return Ok(format!("no finalizers recorded in {}", store.home().display()));
    }
    let mut out = format!(
        "{:<36}  {:>3}  {:<13}  {:>9}  {:<24}  {:<10}\n",
        "SESSION", "GEN", "PHASE", "NEXT LINE", "LAST CHANGE", "RUNNING"
    );
    for r in &records {
        let (state, _) = r.state();
        out.push_str(&format!(
            "{:<36}  {:>3}  {:<13}  {:>9}  {:<24}  {:<10}\n",
            r.meta.session.to_string(),
            r.meta.generation,
            state.phase.name(),
            r.local_watermark()
                .map_or("-".into(), |w| w.next_line.to_string()),
            iso_time(r.log.last().map_or(r.meta.spawned_at, |l| l.at)),
            lease_text(r),
        ));
    }
    let now = now_ms();
    for r in &records {
        if let Some((note, _)) = parked_note(r, now) {
            out.push_str(&format!("\n{} parked: {note}\n", r.meta.session));
        }
    }
    Ok(out)
}

/// `kcap inspect <id>`: one finalizer, its state and whole transition log.
pub fn inspect(store: &Store, session: &str, json: bool) -> Result<String, String> {
    let session: SessionId = session
        .parse()
        .map_err(|e: crate::ids::InvalidSessionId| e.to_string())?;
    let record = store
        .latest_machine(session)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("no finalizer recorded for session {session}"))?;
    let (state, diverged) = record.state();
    if json {
        let value = serde_json::json!({
            "meta": record.meta,
            "state": state,
            "watermark": record.local_watermark(),
            "lease": record.lease,
            "log": record.log,
            "replay_mismatches": diverged,
        });
        return serde_json::to_string_pretty(&value).map_err(|e| e.to_string());
    }
    let mut out = String::new();
    out.push_str(&format!(
        "session     {session} (generation {})\n",
        record.meta.generation
    ));
    out.push_str(&format!("transcript  {}\n", record.meta.transcript.display()));
    out.push_str(&format!("spawned     {}\n", iso_time(record.meta.spawned_at)));
    out.push_str(&format!(
        "state       {}\n",
        describe_phase_absolute(&state.phase)
    ));
    if let Some((note, _)) = parked_note(&record, now_ms()) {
        out.push_str(&format!("parked      {note}\n"));
    }
    out.push_str(&format!(
        "watermark   {}\n",
        record
            .local_watermark()
            .map_or("nothing delivered yet".into(), |w| format!(
                "next line {}, byte {}",
                w.next_line, w.offset
            ))
    ));
    out.push_str(&format!("running     {}\n", lease_text(&record)));
    if diverged > 0 {
        out.push_str(&format!(
            "warning     {diverged} logged transitions do not replay exactly\n"
        ));
    }
    out.push_str("\nSEQ  TIME                      INPUT           -> PHASE\n");
    for r in &record.log {
        out.push_str(&format!(
            "{:>3}  {:<24}  {:<15} -> {}\n",
            r.seq,
            iso_time(r.at),
            r.input.name(),
            describe_phase_absolute(&r.phase)
        ));
    }
    Ok(out)
}

/// A phase for people reading `kcap inspect`: absolute times.
pub fn describe_phase_absolute(p: &Phase) -> String {
    let t = iso_time;
    match p {
        Phase::Spawned { at } => format!("Spawned at {}", t(*at)),
        Phase::Polling { deadline } => format!("Polling until {}", t(*deadline)),
        Phase::ShutdownSeen { offset, run } => format!(
            "ShutdownSeen (shutdown at byte {offset}; {} failures, gives up at {})",
            run.failures,
            t(run.deadline)
        ),
        Phase::TimedOut { run } => format!(
            "TimedOut ({} failures, gives up at {})",
            run.failures,
            t(run.deadline)
        ),
        Phase::Parked { retry_at, .. } => format!("Parked (sweep retries after {})", t(*retry_at)),
        Phase::Drained { outcome, at } => match outcome {
            Outcome::Shutdown { offset } => format!("Drained at {} (shutdown at byte {offset})", t(*at)),
            Outcome::TimedOut => format!("Drained at {} (timed out waiting for the shutdown)", t(*at)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::{iso_time, until};

    #[test]
    fn retry_times_read_as_durations() {
        assert_eq!(until(1_000, 2_000), "now");
        assert_eq!(until(62_000, 1_000), "in 1m 1s");
        assert_eq!(until(3_700_000, 0), "in 1h 1m");
    }

    #[test]
    fn iso_times() {
        assert_eq!(iso_time(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso_time(1_776_964_088_893), "2026-04-23T17:08:08.893Z");
        assert_eq!(iso_time(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }
}
