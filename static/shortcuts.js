// Review keyboard shortcuts: A accept, S save correction, D defect-free, K skip, N next; and
// each defect type's key chooses that type (the brush's colour, and the selected region's
// type). The type keys come from the page: the legend in #type-keys maps each key to its
// type id (the picker's option values), so a type an admin adds gets its key on the page.
function chooseTypeByKey(key) {
  const legend = document.querySelector("#type-keys [data-type-keys]");
  if (!legend) return false;
  const id = JSON.parse(legend.dataset.typeKeys || "{}")[key];
  const input = id && document.querySelector(`#type-picker input[value="${id}"]`);
  if (!input) return false;
  if (!input.checked) input.click(); // the picker's input event retypes the selection
  return true;
}

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
  } else if (chooseTypeByKey(event.key)) {
    event.preventDefault();
  }
});
