// A discovery run's admin page follows the run while it is active (discovery/admin.py): every
// data-poll-ms it asks data-progress-url for the page's fields as the admin renders them (HTML the server
// escaped), puts them in place, and stops once the run has ended, taking the "Cancel run" button away.
"use strict";

(function () {
    const live = document.getElementById("run-live");
    if (!live || live.dataset.active !== "true") {
        return;
    }
    const url = live.dataset.progressUrl;
    const pollMs = Number(live.dataset.pollMs) || 2000;
    let timer = null;

    function show(body) {
        for (const [name, html] of Object.entries(body.fields)) {
            for (const cell of document.querySelectorAll(`.field-${name} .readonly`)) {
                if (cell.innerHTML !== html) {
                    cell.innerHTML = html;
                }
            }
        }
        if (!body.run.active) {
            live.dataset.active = "false";
            live.textContent = `This run has ended (${body.run.status}).`;
            document.getElementById("run-cancel-tool")?.remove();
        }
    }

    function stop(why) {
        live.dataset.active = "stopped";
        live.textContent = `No longer following the run (${why}): reload the page.`;
    }

    async function poll() {
        timer = null;
        let response;
        try {
            response = await fetch(url, {
                headers: { Accept: "application/json" },
                cache: "no-store",
                credentials: "same-origin",
            });
        } catch (error) {
            timer = window.setTimeout(poll, pollMs); // the server is away for a moment: ask again
            return;
        }
        const json = (response.headers.get("Content-Type") || "").startsWith("application/json");
        if (response.redirected || !json) {
            stop("logged out?");
            return;
        }
        if (!response.ok) {
            stop(`HTTP ${response.status}`);
            return;
        }
        const body = await response.json();
        show(body);
        if (body.run.active) {
            timer = window.setTimeout(poll, pollMs);
        }
    }

    // Cancelling leaves the page: no new request that the browser would abort.
    document.getElementById("run-cancel-form")?.addEventListener("submit", () => window.clearTimeout(timer));
    timer = window.setTimeout(poll, pollMs);
})();
