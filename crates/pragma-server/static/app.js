// pragma UI: the overlay picker submits its form when changed (no inline handlers: the
// page's Content-Security-Policy allows scripts from /static only).
document.addEventListener("DOMContentLoaded", () => {
  for (const sel of document.querySelectorAll("select[data-autosubmit]")) {
    sel.addEventListener("change", () => sel.form.submit());
  }
});
