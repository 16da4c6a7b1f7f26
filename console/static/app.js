// The console's live parts, in plain JavaScript: no library, no build.
// Live updates are one request per poll interval (2 s by default) per open
// page, and only while something on it can still change; a job's log is
// one streamed request that follows it until the job ends.
(function () {
  'use strict';
  var poll = Number(document.body.dataset.poll) || 2000;
  var headers = { 'X-Console': '1' };
  var finals = { finished: true, cancelled: true, error: true };

  // Forms that destroy something ask first.
  document.addEventListener('submit', function (e) {
    var f = e.target;
    if (f.dataset && f.dataset.confirm && !window.confirm(f.dataset.confirm)) {
      e.preventDefault();
    }
  });

  // A refused form puts the focus on the first field it is about.
  var invalid = document.querySelector('[aria-invalid="true"]');
  if (invalid) invalid.focus();

  function get(url) {
    return fetch(url, { headers: headers, credentials: 'same-origin' }).then(function (r) {
      if (r.status === 401) { location.assign('/signin?next=' + encodeURIComponent(location.pathname)); }
      if (!r.ok) throw new Error(url + ': ' + r.status);
      return r;
    });
  }

  // every runs step each poll interval while it resolves true, paused while
  // the page is hidden; a failed step is tried again later.
  function every(step) {
    function tick() {
      if (document.hidden) {
        document.addEventListener('visibilitychange', tick, { once: true });
        return;
      }
      step().then(function (more) {
        if (more) setTimeout(tick, poll);
      }, function () { setTimeout(tick, poll * 2); });
    }
    setTimeout(tick, poll);
  }

  // Jobs list: the status, items and run time of jobs not yet final.
  var table = document.getElementById('jobs');
  if (table) {
    every(function () {
      var rows = table.querySelectorAll('tr[data-open]');
      if (!rows.length) return Promise.resolve(false);
      var q = Array.prototype.map.call(rows, function (r) { return 'id=' + encodeURIComponent(r.dataset.job); }).join('&');
      return get(table.dataset.live + '?' + q).then(function (r) { return r.json(); }).then(function (live) {
        rows.forEach(function (row) {
          var j = live[row.dataset.job];
          if (!j) return;
          var st = row.querySelector('[data-field="status"] .status');
          if (st.textContent !== j.status) {
            st.textContent = j.status;
            st.className = 'status status-' + j.status;
          }
          row.querySelector('[data-field="items"]').textContent = j.items;
          row.querySelector('[data-field="duration"]').textContent = j.duration;
          if (j.final) row.removeAttribute('data-open');
        });
        return table.querySelector('tr[data-open]') !== null;
      });
    });
  }

  // A job's page: the summary until the job ends, then its items once.
  var summary = document.getElementById('summary');
  var announce = document.getElementById('status-live');
  if (summary && summary.hasAttribute('data-open')) {
    var body = document.getElementById('summary-body');
    every(function () {
      return get(summary.dataset.summary).then(function (r) { return r.text(); }).then(function (html) {
        var before = body.querySelector('[data-status]').dataset.status;
        var open = body.querySelector('details') && body.querySelector('details').open;
        body.innerHTML = html;
        var d = body.querySelector('details');
        if (d && open) d.open = true;
        var now = body.querySelector('[data-status]').dataset.status;
        if (now !== before && announce) announce.textContent = 'Job status: ' + now;
        if (!finals[now]) return true;
        summary.removeAttribute('data-open');
        var cancel = document.getElementById('cancel');
        if (cancel) {
          var hadFocus = cancel.contains(document.activeElement);
          cancel.remove();
          if (hadFocus) document.getElementById('main').focus();
        }
        return get(summary.dataset.items).then(function (r) { return r.text(); }).then(function (html) {
          document.getElementById('items').innerHTML = html;
          return false;
        });
      });
    });
  }

  // A running job's log, followed as it is written.
  var log = document.getElementById('log');
  if (log && log.dataset.follow) follow(log, document.getElementById('log-state'));

  function follow(log, state) {
    var limit = 2 << 20; // characters kept on the page; the download has all
    fetch(log.dataset.follow, { headers: headers, credentials: 'same-origin' }).then(function (r) {
      if (!r.ok || !r.body) throw new Error('log: ' + r.status);
      var reader = r.body.getReader();
      var dec = new TextDecoder();
      var fresh = true;
      var size = 0;
      function more() {
        return reader.read().then(function (chunk) {
          if (chunk.done) {
            if (state) state.textContent = 'The job has ended; this is its whole log.';
            return;
          }
          var text = dec.decode(chunk.value, { stream: true });
          var stick = log.scrollTop + log.clientHeight >= log.scrollHeight - 8;
          if (fresh) { log.textContent = ''; fresh = false; }
          size += text.length;
          if (size > limit) {
            reader.cancel();
            if (state) state.textContent = 'The log is long: download it for the rest.';
            return;
          }
          log.appendChild(document.createTextNode(text));
          if (stick) log.scrollTop = log.scrollHeight;
          return more();
        });
      }
      return more();
    }).catch(function () {
      if (summary && summary.hasAttribute('data-open')) setTimeout(function () { follow(log, state); }, poll * 2);
    });
  }
})();
