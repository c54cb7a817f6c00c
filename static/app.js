// cortexlens: progressive enhancement for server-rendered pages. Every page works without this file; it adds
// drag-and-drop and paste uploads, the same checks the server makes (before any byte is sent), a progress
// state, the channel panel as a dialog, and the overlay opacity slider. htmx 4 does the requests and swaps.
// Content Security Policy: no inline code anywhere, so all listeners are delegated from here.
(() => {
  "use strict";

  document.documentElement.classList.add("js");

  // ---------------------------------------------------------------------------------------------------------
  // Upload: checks, drag and drop, paste, progress
  // ---------------------------------------------------------------------------------------------------------

  const uploadForm = () => document.getElementById("upload-form");

  function showUploadError(form, message) {
    const slot = form.querySelector("[data-upload-error]");
    if (!slot) return;
    slot.textContent = message || "";
    slot.hidden = !message;
  }

  // Mirrors the server's limits and sentences (app.engine.imaging, app.api.analyses.read_upload).
  function uploadProblem(form, file) {
    if (!file) return "choose an image file to analyse, or pick one of the samples";
    const types = (form.dataset.accept || "").split(",").filter(Boolean);
    const extensions = (form.dataset.extensions || "").split(/\s+/).filter(Boolean);
    const extension = (file.name.split(".").pop() || "").toLowerCase();
    const typeKnown = file.type ? types.includes(file.type) : extensions.includes(extension);
    if (!typeKnown) {
      return `the file is not an image in a format we can read (${form.dataset.formatNames})`;
    }
    const limit = Number(form.dataset.maxBytes);
    if (limit && file.size > limit) {
      return `the upload is larger than the limit of ${limit.toLocaleString("en-US")} bytes`;
    }
    if (file.size === 0) return "the uploaded file is empty";
    return "";
  }

  function submitFile(form, file) {
    const problem = uploadProblem(form, file);
    if (problem) {
      showUploadError(form, problem);
      return;
    }
    showUploadError(form, "");
    const input = form.querySelector('input[type="file"]');
    if (input.files[0] !== file) {
      const transfer = new DataTransfer();
      transfer.items.add(file);
      input.files = transfer.files;
    }
    form.requestSubmit(form.querySelector("[data-analyse]"));
  }

  // Capture phase: runs before htmx's own submit listener on the form, so a bad file never leaves the browser.
  document.addEventListener(
    "submit",
    (event) => {
      const form = event.target;
      if (form.id !== "upload-form") return;
      if (event.submitter && event.submitter.name === "sample") {
        showUploadError(form, "");
        return;
      }
      const problem = uploadProblem(form, form.querySelector('input[type="file"]').files[0]);
      if (problem) {
        event.preventDefault();
        event.stopPropagation();
        showUploadError(form, problem);
      }
    },
    true,
  );

  document.addEventListener("change", (event) => {
    const input = event.target;
    const form = input.closest && input.closest("#upload-form");
    if (!form || input.type !== "file" || !input.files[0]) return;
    submitFile(form, input.files[0]);
  });

  // The whole page takes a dropped image while the upload form is on it, so a near miss does not open the file.
  function dropzoneFor(event) {
    const form = uploadForm();
    if (!form || !event.dataTransfer || ![...event.dataTransfer.types].includes("Files")) return null;
    return form.querySelector("[data-dropzone]");
  }

  document.addEventListener("dragover", (event) => {
    const zone = dropzoneFor(event);
    if (!zone) return;
    event.preventDefault();
    event.dataTransfer.dropEffect = "copy";
    zone.classList.add("is-dragover");
  });

  document.addEventListener("dragleave", (event) => {
    const zone = dropzoneFor(event);
    if (zone && (!event.relatedTarget || !document.documentElement.contains(event.relatedTarget))) {
      zone.classList.remove("is-dragover");
    }
  });

  document.addEventListener("drop", (event) => {
    const zone = dropzoneFor(event);
    if (!zone) return;
    event.preventDefault();
    zone.classList.remove("is-dragover");
    submitFile(uploadForm(), event.dataTransfer.files[0]);
  });

  document.addEventListener("paste", (event) => {
    const form = uploadForm();
    if (!form || !event.clipboardData) return;
    const editing = event.target.closest && event.target.closest('textarea, [contenteditable], input:not([type="file"])');
    if (editing) return;
    const file = [...event.clipboardData.files].find((item) => item.type.startsWith("image/"));
    if (!file) return;
    event.preventDefault();
    submitFile(form, file);
  });

  let previewUrl = null;
  let busyTimer = null;
  // The busy state (progress shown, the fields and samples disabled, the rest dimmed) comes only once an analysis
  // has taken this long: most take less. Restyling the page at submit had the browser work on the same cores as
  // the analysis, whose forward pass then took about twice as long (docs/performance.md).
  const PROGRESS_DELAY_MS = 250;

  function setBusy(form, busy) {
    form.classList.toggle("is-busy", busy);
    for (const control of form.querySelectorAll("#upload-fields, .sample")) control.disabled = busy;
  }

  function showProgressLater(form, submitter) {
    const label = form.querySelector("[data-progress-label]");
    const preview = form.querySelector("[data-progress-preview]");
    const model = form.querySelector("select[name=model]");
    const modelName = model ? model.selectedOptions[0].textContent.split("·")[0].trim() : "the network";
    if (previewUrl) URL.revokeObjectURL(previewUrl);
    previewUrl = null;
    let what = "the image";
    let src = "";
    if (submitter && submitter.name === "sample") {
      const thumb = submitter.querySelector("img");
      what = `the sample “${submitter.textContent.trim()}”`;
      src = thumb ? thumb.currentSrc || thumb.src : "";
    } else {
      const file = form.querySelector('input[type="file"]').files[0];
      if (file) {
        what = `“${file.name}”`;
        previewUrl = URL.createObjectURL(file);
        src = previewUrl;
      }
    }
    clearTimeout(busyTimer);
    busyTimer = setTimeout(() => {
      if (label) label.textContent = `running ${what} through ${modelName}`;
      if (preview) {
        // Decoded only if the progress shows at all: a large photo takes a while to decode.
        preview.hidden = !src;
        if (src) preview.src = src;
      }
      setBusy(form, true);
    }, PROGRESS_DELAY_MS);
  }

  document.addEventListener("htmx:before:request", (event) => {
    const ctx = event.detail.ctx;
    const source = ctx.sourceElement;
    if (source && source.id === "upload-form") {
      showUploadError(source, "");
      showProgressLater(source, ctx.request.submitter);
    }
  });

  document.addEventListener("htmx:finally:request", (event) => {
    const source = event.detail.ctx.sourceElement;
    if (source && source.id === "upload-form") {
      clearTimeout(busyTimer);
      setBusy(source, false);
    }
  });

  // Answers that are not HTML (the upload-size guard answers JSON before the app sees the body; a crash answers
  // plain text) go inline under the form instead of replacing the page.
  document.addEventListener("htmx:before:swap", (event) => {
    const ctx = event.detail.ctx;
    const source = ctx.sourceElement;
    if (!source || source.id !== "upload-form" || !ctx.response) return;
    const type = ctx.response.headers.get("content-type") || "";
    if (type.includes("text/html")) return;
    event.preventDefault();
    let detail = "";
    try {
      detail = JSON.parse(ctx.text).detail;
    } catch (_) {
      /* not JSON after all: fall back to the status */
    }
    showUploadError(source, detail || `the server answered ${ctx.response.status}; try again in a moment`);
  });

  document.addEventListener("htmx:error", (event) => {
    const ctx = event.detail.ctx;
    const source = ctx && ctx.sourceElement;
    if (source && source.id === "upload-form") {
      showUploadError(source, "the server could not be reached; check the connection and try again");
    }
  });

  // A new page swapped into <main>: start at its top and move focus there, as a page load would.
  document.addEventListener("htmx:after:swap", (event) => {
    const ctx = event.detail.ctx;
    if (!ctx.target || ctx.target.id !== "main") return;
    window.scrollTo(0, 0);
    // After the first frame: focusing lays the whole new page out at once, and the browser does that anyway
    // for the frame, where its pictures' requests are already under way.
    const main = ctx.target;
    requestAnimationFrame(() => setTimeout(() => main.focus({ preventScroll: true })));
  });

  // ---------------------------------------------------------------------------------------------------------
  // Channel panel (a modal <dialog>: Escape closes it natively) and the overlay slider
  // ---------------------------------------------------------------------------------------------------------

  let panelOpener = null;

  // Every tile that links to a channel (16 per atlas, a page of them in the explorer) opens it in the panel. One
  // listener for all of them rather than an hx-get on each: a first view holds over 200, and htmx initialises
  // every element it swaps in, which was the largest part of the browser's time to show an analysis.
  document.addEventListener("click", (event) => {
    const link = event.target instanceof Element ? event.target.closest("a[data-channel-panel]") : null;
    if (!link || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
    event.preventDefault();
    htmx.ajax("GET", link.getAttribute("href"), { target: "#channel-panel-body", source: link });
  });

  function panelLoading(body) {
    const note = document.createElement("p");
    note.className = "panel-loading";
    note.textContent = "Loading the channel…";
    body.replaceChildren(note);
  }

  document.addEventListener("htmx:before:request", (event) => {
    const ctx = event.detail.ctx;
    if (!ctx.target || ctx.target.id !== "channel-panel-body") return;
    const dialog = ctx.target.closest("dialog");
    if (!dialog.contains(ctx.sourceElement)) panelOpener = ctx.sourceElement;
    if (!dialog.open) {
      panelLoading(ctx.target);
      dialog.showModal();
    }
    dialog.classList.add("is-loading");
  });

  document.addEventListener("htmx:after:swap", (event) => {
    const ctx = event.detail.ctx;
    if (!ctx.target || ctx.target.id !== "channel-panel-body") return;
    const dialog = ctx.target.closest("dialog");
    dialog.classList.remove("is-loading");
    const heading = ctx.target.querySelector("h2[tabindex]");
    if (heading) heading.focus({ preventScroll: true });
  });

  document.addEventListener("htmx:finally:request", (event) => {
    const ctx = event.detail.ctx;
    if (ctx.target && ctx.target.id === "channel-panel-body") {
      ctx.target.closest("dialog").classList.remove("is-loading");
    }
  });

  // "close" does not bubble: listen in the capture phase. Focus goes back to the tile that opened the panel.
  document.addEventListener(
    "close",
    (event) => {
      if (event.target.id !== "channel-panel") return;
      if (panelOpener && panelOpener.isConnected) panelOpener.focus();
      panelOpener = null;
    },
    true,
  );

  // A click on the backdrop (the dialog box itself, outside its content) closes the panel.
  document.addEventListener("click", (event) => {
    const dialog = event.target;
    if (dialog instanceof HTMLDialogElement && dialog.id === "channel-panel" && dialog.open) {
      const box = dialog.getBoundingClientRect();
      const inside =
        event.clientX >= box.left && event.clientX <= box.right && event.clientY >= box.top && event.clientY <= box.bottom;
      if (!inside) dialog.close();
    }
  });

  document.addEventListener("input", (event) => {
    const slider = event.target;
    if (!slider.matches || !slider.matches("[data-overlay-opacity]")) return;
    const figure = slider.closest("[data-overlay]");
    // CSSOM, not a style attribute: allowed under style-src 'self'.
    figure.style.setProperty("--overlay-opacity", String(Number(slider.value) / 100));
    const output = figure.querySelector("[data-overlay-output]");
    if (output) output.textContent = `${slider.value}%`;
  });
})();
