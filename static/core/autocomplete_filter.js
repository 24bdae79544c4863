// Suggestions for core.admin.AutocompleteFilter: as the operator types, ask the admin's autocomplete
// view (the related admin's search_fields, the same endpoint as the admin's select2 widgets) and fill
// the input's datalist; picking a suggestion submits the filter. Loaded once per filter: bind once.
"use strict";
(function () {
    if (window.autocompleteFilterBound) {
        return;
    }
    window.autocompleteFilterBound = true;
    const DELAY_MS = 200;

    function attach(input) {
        const list = document.getElementById(input.getAttribute("list"));
        let timer = null;
        let asked = null;
        input.addEventListener("input", (event) => {
            // Chrome fires input without an inputType when a datalist option is picked.
            const picked = !event.inputType && [...list.options].some((o) => o.value === input.value);
            if (picked) {
                input.form.requestSubmit();
                return;
            }
            clearTimeout(timer);
            timer = setTimeout(() => suggest(input, list), DELAY_MS);
        });

        async function suggest() {
            const term = input.value.trim();
            if (term === asked) {
                return;
            }
            asked = term;
            const url = new URL(input.dataset.autocompleteUrl, window.location.href);
            url.searchParams.set("term", term);
            const response = await fetch(url, {credentials: "same-origin", headers: {Accept: "application/json"}});
            if (!response.ok || term !== input.value.trim()) {
                return;  // a newer term is on its way
            }
            const {results} = await response.json();
            list.replaceChildren(...results.map((result) => {
                const option = document.createElement("option");
                option.value = result.id;
                option.label = result.text;
                return option;
            }));
        }
    }

    function init() {
        document.querySelectorAll("form.autocomplete-filter input[data-autocomplete-url]").forEach(attach);
    }
    if (document.readyState === "loading") {
        document.addEventListener("DOMContentLoaded", init);
    } else {
        init();
    }
})();
