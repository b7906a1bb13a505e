//! "Interactive in the browser ≤ 1 s": headless Chromium (the driver `tests/browser.rs` uses)
//! loads the session list and the first page of a 10,000-line session from the bench's server.
//! Per page, p50 over several loads after one warm-up, in ms from navigation start (the page's
//! own clock): DOM interactive and load event end from the Navigation Timing entry, and the first
//! animation frame after the whole document is parsed, when the page's last item (the first
//! page's last line, `#L499`) is laid out and painted.

use std::time::Duration;

use serde_json::{json, Value};

use crate::browser::{self, Browser};

const LOADS: usize = 7;

/// Recorded in every document before its own scripts run: the frame after parsing ends, and
/// which item was last then (a line's id, or the number of list rows).
const PAINT_PROBE: &str = "document.addEventListener('DOMContentLoaded', () => requestAnimationFrame(() => {
  const items = document.querySelectorAll('#lines article, #sessions tbody tr');
  const last = items.length ? items[items.length - 1] : null;
  window.__kcapLast = last ? (last.id || String(items.length) + ' rows') : null;
  window.__kcapPainted = performance.now();
}));";

const READ_TIMES: &str = "(() => { const n = performance.getEntriesByType('navigation')[0];
  return [n.domInteractive, n.loadEventEnd, window.__kcapPainted, window.__kcapLast]; })()";

/// One page's p50 figures, ms from navigation start.
pub struct PageTimes {
    pub interactive: f64,
    pub loaded: f64,
    pub painted: f64,
    /// The last item on the page when it was painted.
    pub last: String,
}

fn p50(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn times(b: &mut Browser, url: &str) -> Result<PageTimes, String> {
    let mut all = Vec::new();
    for _ in 0..=LOADS {
        b.goto(url)?;
        b.until(
            "window.__kcapPainted !== undefined && performance.getEntriesByType('navigation')[0].loadEventEnd > 0",
            Duration::from_secs(20),
        )?;
        all.push(b.eval(READ_TIMES)?);
    }
    all.remove(0); // the warm-up load
    let column = |i: usize| {
        p50(all
            .iter()
            .map(|v: &Value| v[i].as_f64().unwrap_or(f64::NAN))
            .collect())
    };
    Ok(PageTimes {
        interactive: column(0),
        loaded: column(1),
        painted: column(2),
        last: all[0][3].as_str().unwrap_or("nothing").to_string(),
    })
}

/// Times `pages` (label, URL) in a fresh headless Chromium; `Ok(None)` (after one printed line)
/// when there is no Chromium.
pub fn measure(pages: &[(&str, String)]) -> Result<Option<Vec<(String, PageTimes)>>, String> {
    let path = match browser::chromium() {
        Ok(path) => path,
        Err(why) => {
            println!("web: skipped the browser figures: {why}");
            return Ok(None);
        }
    };
    let mut b = Browser::start(&path)?;
    b.page(
        "Page.addScriptToEvaluateOnNewDocument",
        json!({ "source": PAINT_PROBE }),
    )?;
    let mut out = Vec::new();
    for (label, url) in pages {
        out.push((label.to_string(), times(&mut b, url)?));
    }
    if !b.errors.is_empty() {
        return Err(format!("console errors in the browser: {:?}", b.errors));
    }
    Ok(Some(out))
}
