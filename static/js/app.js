// Drag and drop onto the upload form: dropped files go into the form's file input and the
// form is submitted through htmx, exactly as if they had been chosen with the picker.
document.addEventListener("DOMContentLoaded", () => {
  for (const zone of document.querySelectorAll("[data-dropzone]")) {
    const input = zone.querySelector("input[type=file]");
    const form = zone.closest("form");
    if (!input || !form) continue;
    for (const name of ["dragenter", "dragover"]) {
      zone.addEventListener(name, (event) => {
        event.preventDefault();
        zone.classList.add("over");
      });
    }
    for (const name of ["dragleave", "drop"]) {
      zone.addEventListener(name, () => zone.classList.remove("over"));
    }
    zone.addEventListener("drop", (event) => {
      event.preventDefault();
      if (!event.dataTransfer || event.dataTransfer.files.length === 0) return;
      input.files = event.dataTransfer.files;
      form.requestSubmit();
    });
  }
});
// After an upload, clear the picker so the same files are not sent twice by accident.
document.addEventListener("htmx:afterRequest", (event) => {
  const form = event.detail.elt;
  if (form && form.id === "upload-form" && event.detail.successful) form.reset();
});
// Progress bars carry their width as data (the Content-Security-Policy allows no style
// attributes in the markup); set it on every page load and after every htmx swap.
function applyFills(root) {
  for (const bar of root.querySelectorAll("[data-fill]")) {
    bar.style.width = `${Number(bar.dataset.fill) || 0}%`;
  }
}
document.addEventListener("DOMContentLoaded", () => applyFills(document));
document.addEventListener("htmx:load", (event) => applyFills(event.detail.elt));
// A mark is kept per document (or JSON Lines record), not per chunk: when one result is
// marked, the other results of the same document on the page show the same mark.
document.addEventListener("htmx:load", (event) => {
  const judge = event.detail.elt;
  if (!judge.classList || !judge.classList.contains("judge") || !judge.dataset.unit) return;
  for (const other of document.querySelectorAll(".judge[data-unit]")) {
    if (other === judge || other.dataset.unit !== judge.dataset.unit) continue;
    for (const button of judge.querySelectorAll("button[name=grade]")) {
      const twin = other.querySelector(`button[name=grade][value="${button.value}"]`);
      if (!twin) continue;
      twin.className = button.className;
      twin.setAttribute("aria-pressed", button.getAttribute("aria-pressed") || "false");
    }
    const state = judge.querySelector("[data-testid=mark-state]");
    const twinState = other.querySelector("[data-testid=mark-state]");
    if (state && twinState) twinState.textContent = state.textContent;
  }
});
// The slug follows the name as it is typed, until the slug is edited by hand (the server
// makes the same slug from the name when the field is left empty).
document.addEventListener("DOMContentLoaded", () => {
  for (const slug of document.querySelectorAll("input[data-slug-from]")) {
    const name = document.getElementById(slug.dataset.slugFrom);
    if (!name) continue;
    let edited = slug.value !== "";
    slug.addEventListener("input", () => { edited = slug.value !== ""; });
    name.addEventListener("input", () => {
      if (edited) return;
      slug.value = name.value.normalize("NFKD").replace(/[\u0300-\u036f]/g, "")
        .toLowerCase().replace(/[^a-z0-9\s-]/g, "").trim().replace(/[\s_-]+/g, "-")
        .replace(/^-+|-+$/g, "").slice(0, 64).replace(/-+$/, "");
    });
  }
});
