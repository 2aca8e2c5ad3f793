// A confirmation asked in a modal <dialog>: keyboard-usable (Escape or "Keep" says no), and
// testable without the browser's own confirm().

let dialog = null;

function build() {
  dialog = document.createElement('dialog');
  dialog.className = 'dialog';
  dialog.id = 'confirm-dialog';
  dialog.innerHTML = `
    <form method="dialog" class="dialog__form">
      <h2 class="dialog__title"></h2>
      <p class="dialog__message"></p>
      <div class="dialog__actions">
        <button class="button" value="no" type="submit">Keep</button>
        <button class="button button--danger dialog__confirm" value="yes" type="submit"></button>
      </div>
    </form>`;
  document.body.append(dialog);
}

/**
 * Ask `title` (with `message` below it); resolves to true when the person presses the
 * `confirm` button, false for "Keep", Escape or a click outside.
 */
export function confirmAction({ title, message = '', confirm = 'Confirm' }) {
  if (!dialog) build();
  dialog.querySelector('.dialog__title').textContent = title;
  const text = dialog.querySelector('.dialog__message');
  text.textContent = message;
  text.hidden = !message;
  dialog.querySelector('.dialog__confirm').textContent = confirm;
  dialog.returnValue = '';
  dialog.showModal();
  return new Promise((resolve) => {
    dialog.addEventListener('close', () => resolve(dialog.returnValue === 'yes'), { once: true });
  });
}
