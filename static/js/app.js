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
