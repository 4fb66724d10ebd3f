/**
 * A spinner on a TTY, plain lines when piped. (Small enough that a dependency would cost more than it saves;
 * see docs/adr/0002-stack.md.)
 */

const FRAMES = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];

export interface Progress {
  /** Shows `text` as the current step. */
  step(text: string): void;
  /** Removes the spinner line (before printing other output). */
  clear(): void;
  stop(): void;
}

export function createProgress(stream: NodeJS.WriteStream, enabled: boolean): Progress {
  if (!enabled || !stream.isTTY) {
    return { step: () => {}, clear: () => {}, stop: () => {} };
  }
  let text = '';
  let frame = 0;
  let visible = false;
  const render = () => {
    stream.write(`\r\x1b[2K${FRAMES[frame++ % FRAMES.length]} ${text}`);
    visible = true;
  };
  const timer = setInterval(() => {
    if (text) render();
  }, 80);
  timer.unref();
  return {
    step(next) {
      text = next;
      render();
    },
    clear() {
      if (visible) stream.write('\r\x1b[2K');
      visible = false;
    },
    stop() {
      clearInterval(timer);
      this.clear();
      text = '';
    },
  };
}
