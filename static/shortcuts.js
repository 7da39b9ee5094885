// Review keyboard shortcuts: A accept, S save correction, D defect-free, K skip, N next.
document.addEventListener("keydown", (event) => {
  const target = event.target;
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  if (target && (target.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(target.tagName))) return;
  const ids = { a: "btn-accept", s: "btn-save", d: "btn-defect-free", k: "btn-skip", n: "btn-next" };
  const id = ids[event.key.toLowerCase()];
  const button = id && document.getElementById(id);
  if (button) {
    event.preventDefault();
    button.click();
  }
});
