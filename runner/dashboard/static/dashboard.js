// The dashboard's one script of its own (loaded with the page's nonce; no inline code, no eval).
//
// A job page's live section (#job-live) names the job's event stream while the job is active
// (data-events) and what it shows (data-version). The stream sends the job's version whenever it
// changes; when that differs from what the page shows, htmx fetches the fresh section (data-refresh) and
// swaps it in place: no reload. Once the job has ended the server sends `end` and closes the stream (the
// script then keeps the browser from reconnecting); a section swapped in later that is active again
// (after Retry) opens a new one.
(function () {
  "use strict";

  let source = null; // the open EventSource, if any
  let latest = null; // the job's version as the stream last said
  let refreshing = false;

  function section() {
    return document.getElementById("job-live");
  }

  function refresh() {
    const shown = section();
    if (!shown || latest === null || shown.dataset.version === latest || refreshing) {
      return;
    }
    refreshing = true;
    htmx
      .ajax("GET", shown.dataset.refresh, { target: "#job-live", swap: "outerHTML" })
      .finally(function () {
        refreshing = false;
        refresh();
      });
  }

  function stop() {
    if (source !== null) {
      source.close();
    }
    source = null;
  }

  function open(url) {
    const stream = new EventSource(url);
    let ended = false;
    source = stream;
    latest = null; // the stream's first event says where the job is now
    stream.addEventListener("job", function (event) {
      latest = JSON.parse(event.data).version;
      refresh();
    });
    stream.addEventListener("end", function () {
      ended = true; // the server closes the stream next; closing it here would abort the request
    });
    stream.addEventListener("error", function () {
      if (!ended && stream.readyState !== EventSource.CLOSED) {
        return; // dropped mid-way: the browser reconnects by itself
      }
      stream.close(); // ended (no reconnecting), or refused
      if (source === stream) {
        source = null;
        if (ended) {
          follow(); // the job may have been retried meanwhile
        }
      }
    });
  }

  function follow() {
    const shown = section();
    const url = shown ? shown.dataset.events || null : null;
    if (url !== null && source === null) {
      open(url);
    }
    refresh();
  }

  htmx.onLoad(follow);
  window.addEventListener("pagehide", stop);
})();
