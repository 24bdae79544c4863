// An import job's page (templates/admin/inventory/import_job.html): poll the job's status and move the
// progress bar; once the job has ended, reload the page, which then shows what it found or did.
(function () {
  "use strict";
  var box = document.getElementById("import-job");
  if (!box) {
    return;
  }
  var url = box.getAttribute("data-status-url");
  var bar = document.getElementById("import-progress");
  var percent = document.getElementById("import-percent");
  var status = document.getElementById("import-status");
  var phase = document.getElementById("import-phase");
  var POLL_MS = 1000;

  function show(job) {
    bar.value = job.percent;
    bar.textContent = job.percent + "%";
    percent.textContent = job.percent + "%";
    status.textContent = job.status;
    status.className = "import-status-" + job.status;
    phase.textContent = "(" + job.phase + (job.total ? ": " + job.done + " of " + job.total : "") + ")";
  }

  function poll() {
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" }, cache: "no-store" })
      .then(function (response) {
        if (!response.ok) {
          throw new Error("status " + response.status);
        }
        return response.json();
      })
      .then(function (job) {
        show(job);
        if (job.status === "succeeded" || job.status === "failed") {
          window.location.reload();
        } else {
          window.setTimeout(poll, POLL_MS);
        }
      })
      .catch(function () {
        window.setTimeout(poll, POLL_MS * 5); // a restart or a lost network: keep trying, more slowly
      });
  }

  window.setTimeout(poll, POLL_MS);
})();
