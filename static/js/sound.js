// Short tones made with WebAudio (no sound files), for the alerts and chat panels. Browsers start
// audio only after a gesture on the page, so the context resumes on the first click.

let audio = null;

document.addEventListener('pointerdown', () => {
  if (audio && audio.state === 'suspended') audio.resume();
});

/** Plays `freqs` one after another, `step` seconds apart, each a quarter second long. */
export function tones(freqs, { step = 0.12, volume = 0.2 } = {}) {
  try {
    audio = audio || new (window.AudioContext || window.webkitAudioContext)();
    if (audio.state === 'suspended') audio.resume();
    const now = audio.currentTime;
    for (const [i, freq] of freqs.entries()) {
      const osc = audio.createOscillator();
      const gain = audio.createGain();
      osc.frequency.value = freq;
      gain.gain.setValueAtTime(0.0001, now + i * step);
      gain.gain.exponentialRampToValueAtTime(volume, now + i * step + 0.02);
      gain.gain.exponentialRampToValueAtTime(0.0001, now + i * step + 0.25);
      osc.connect(gain).connect(audio.destination);
      osc.start(now + i * step);
      osc.stop(now + i * step + 0.3);
    }
  } catch (e) {
    console.warn('no sound', e);
  }
}
