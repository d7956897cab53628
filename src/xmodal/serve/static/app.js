// xmodal search page: plain JavaScript, no build step. Talks to the JSON API of the same origin.
// Everything a server or a user supplies is inserted with textContent / attributes, never as HTML.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const form = $("search-form");
  const query = $("query");
  const fileInput = $("file");
  const drop = $("drop");
  const preview = $("preview");
  const results = $("results");
  const message = $("message");
  const status = $("status");
  const kInput = $("k");
  let imageQuery = null; // {file: File} or {id: "item id", thumb: "url"}

  const direction = () => form.elements.direction.value;
  const mode = () => form.elements.mode.value;

  function showMessage(text) {
    message.textContent = text;
    message.hidden = !text;
  }

  function setDirection(value) {
    for (const radio of form.elements.direction) radio.checked = radio.value === value;
    syncInputs();
  }

  function syncInputs() {
    const textual = direction() === "text-image";
    $("text-input").hidden = !textual;
    $("image-input").hidden = textual;
  }

  function setImageQuery(q, src) {
    imageQuery = q;
    if (preview.dataset.objectUrl) URL.revokeObjectURL(preview.dataset.objectUrl);
    delete preview.dataset.objectUrl;
    if (src) {
      preview.src = src;
      preview.alt = "query image";
      preview.hidden = false;
    } else {
      preview.hidden = true;
    }
  }

  function useFile(file) {
    if (!file) return;
    if (!file.type.startsWith("image/")) {
      showMessage("That file is not an image.");
      return;
    }
    const url = URL.createObjectURL(file);
    setImageQuery({ file }, url);
    preview.dataset.objectUrl = url;
    showMessage("");
  }

  async function detail(response) {
    try {
      const body = await response.json();
      return typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
    } catch (e) {
      return response.statusText || "request failed";
    }
  }

  function k() {
    const v = parseInt(kInput.value, 10);
    return Number.isFinite(v) ? v : 12;
  }

  async function search() {
    showMessage("");
    let response;
    const dir = direction();
    try {
      if (dir === "text-image") {
        const text = query.value.trim();
        if (!text) {
          showMessage("Type something to search for.");
          query.focus();
          return;
        }
        response = await fetch("/search/text", {
          method: "POST",
          headers: { "Content-Type": "application/json" },
          body: JSON.stringify({ query: text, k: k(), mode: mode(), target: "image" }),
        });
      } else {
        if (!imageQuery) {
          showMessage("Choose or drop an image first (or click a result).");
          drop.focus();
          return;
        }
        const data = new FormData();
        if (imageQuery.file) data.append("file", imageQuery.file);
        else data.append("id", imageQuery.id);
        data.append("k", String(k()));
        data.append("mode", mode());
        data.append("target", dir === "image-text" ? "text" : "image");
        response = await fetch("/search/image", { method: "POST", body: data });
      }
    } catch (e) {
      showMessage("The server could not be reached.");
      return;
    }
    if (!response.ok) {
      showMessage(`Error ${response.status}: ${await detail(response)}`);
      return;
    }
    render(await response.json());
  }

  function render(body) {
    results.replaceChildren();
    status.textContent = `${body.results.length} results · ${body.mode} · ${body.took_ms.toFixed(1)} ms`;
    if (!body.results.length) {
      showMessage("No results.");
      return;
    }
    for (const r of body.results) {
      const li = document.createElement("li");
      li.className = "card";
      const button = document.createElement("button");
      button.type = "button";
      const text = r.caption || (r.captions.length ? r.captions[0] : r.id);
      button.setAttribute("aria-label", `${r.rank}. ${text} (score ${r.score.toFixed(3)}): find images like this`);
      button.dataset.id = r.id;
      if (r.thumbnail_url) {
        const img = document.createElement("img");
        img.src = r.thumbnail_url;
        img.alt = text;
        img.loading = "lazy";
        button.append(img);
      }
      const caption = document.createElement("div");
      caption.className = "text";
      caption.textContent = `${r.rank}. ${text} `;
      const score = document.createElement("span");
      score.className = "score";
      score.textContent = r.distance === null ? r.score.toFixed(3) : `${r.score.toFixed(3)} (d=${r.distance})`;
      caption.append(score);
      button.append(caption);
      button.addEventListener("click", () => {
        setImageQuery({ id: r.id }, r.thumbnail_url);
        setDirection("image-image");
        search();
      });
      li.append(button);
      results.append(li);
    }
  }

  // --- wiring ---------------------------------------------------------------------------------
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    search();
  });
  for (const radio of form.elements.direction) radio.addEventListener("change", syncInputs);
  fileInput.addEventListener("change", () => useFile(fileInput.files[0]));
  drop.addEventListener("click", () => fileInput.click());
  drop.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") {
      event.preventDefault();
      fileInput.click();
    }
  });
  // Cancelling dragenter and dragover makes the zone a drop target.
  for (const type of ["dragenter", "dragover"]) {
    drop.addEventListener(type, (event) => {
      event.preventDefault();
      drop.classList.add("over");
    });
  }
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    const files = event.dataTransfer.files;
    try {
      fileInput.files = files; // the picker names the dropped file, not an earlier one
    } catch (e) {
      fileInput.value = "";
    }
    useFile(files[0]);
  });

  fetch("/health")
    .then((r) => r.json())
    .then((h) => {
      status.textContent = `${h.items.toLocaleString()} images · ${h.texts.toLocaleString()} captions · index v${h.version}`;
      kInput.max = String(h.limits.max_k);
      query.maxLength = h.limits.max_query_chars;
    })
    .catch(() => {
      status.textContent = "Server unavailable.";
    });
  syncInputs();
})();
