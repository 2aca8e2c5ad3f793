// The form for the organisation's settings and for a vehicle's own alert settings, generated from
// the API's own schema (`/api/v1/openapi.json`: `FilterSettings`, `AlertSettings`,
// `TripSettings`, `ReportSettings`): each key's description, default, minimum, maximum, and
// whether it can be turned off (its type includes null). Units come from the key's suffix. A key
// with a fixed set of values is a choice; other text is typed (a time zone is picked from the
// browser's list of them).
//
//   const form = new SettingsForm(el, schemas, { sections: ['filter', 'alerts'] });
//   form.set({ filter: {...}, alerts: {...} });
//   form.changes()                 // only the keys changed: a PATCH body
//
//   const form = new SettingsForm(el, schemas, { sections: ['alerts'], mode: 'override' });
//   form.set({ alerts: overrides }, { alerts: organisationSettings });
//   form.overrides()               // the whole override object: a PUT body
//
// A refusal is shown at its key with `showError('alerts.speed_limit_mps', message)`; the values
// typed stay.

import { api } from './api.js';
import { el } from './forms.js';

const SECTIONS = {
  filter: 'FilterSettings',
  alerts: 'AlertSettings',
  trips: 'TripSettings',
  reports: 'ReportSettings',
};
const SECTION_TITLES = {
  filter: 'Position filter',
  alerts: 'Alert rules',
  trips: 'Trips and stops',
  reports: 'Reports',
};

// Longest suffix first, so `_mps` is not read as `_s`.
const UNITS = [
  ['_mps', 'm/s', 'metres per second'],
  ['_min', 'min', 'minutes'],
  ['_m', 'm', 'metres'],
  ['_s', 's', 'seconds'],
  ['_h', 'h', 'hours'],
];

let schemasPromise = null;

/** The settings sections' schemas from the API's OpenAPI document, fetched once per page. */
export function settingsSchemas() {
  if (!schemasPromise) {
    schemasPromise = api('/openapi.json').then((doc) => {
      const out = {};
      const schemas = doc.components.schemas;
      for (const [section, name] of Object.entries(SECTIONS)) out[section] = resolved(schemas[name], schemas);
      return out;
    });
    schemasPromise.catch(() => {
      schemasPromise = null;
    });
  }
  return schemasPromise;
}

/** `schema` with each property's `$ref` (plain, or alone in a `oneOf`) merged in. */
function resolved(schema, all) {
  const properties = {};
  for (const [key, prop] of Object.entries(schema.properties || {})) {
    const ref = prop.$ref || (prop.oneOf && prop.oneOf.length === 1 && prop.oneOf[0].$ref);
    const target = ref ? all[ref.split('/').pop()] : null;
    properties[key] = target ? { ...target, ...prop, oneOf: undefined, $ref: undefined } : prop;
  }
  return { ...schema, properties };
}

/** The unit of a key, from its suffix: [symbol, words] or null. */
export function unitOf(key) {
  for (const [suffix, symbol, words] of UNITS) if (key.endsWith(suffix)) return [symbol, words];
  return null;
}

const WORDS = { min: 'minimum', max: 'maximum' };

/** "speed_limit_mps" → "Speed limit"; "stopped_min" → "Stopped"; "overspeed_min_s" → "Overspeed minimum". */
function labelOf(key) {
  const unit = UNITS.find(([suffix]) => key.endsWith(suffix));
  const base = unit ? key.slice(0, -unit[0].length) : key;
  const words = base.split('_').map((w) => WORDS[w] || w).join(' ');
  return words.charAt(0).toUpperCase() + words.slice(1);
}

function typesOf(prop) {
  return Array.isArray(prop.type) ? prop.type : [prop.type];
}

/** A number as the form shows it, with the unit; km/h beside m/s. */
export function withUnit(key, value) {
  if (value == null) return 'off';
  if (typeof value === 'boolean') return value ? 'on' : 'off';
  const unit = unitOf(key);
  if (!unit) return String(value);
  let text = `${value} ${unit[0]}`;
  if (unit[0] === 'm/s') text += ` (${kmh(value)} km/h)`;
  return text;
}

/** The schema's Markdown-ish text as nodes: `code` spans become <code>, the rest stays text. */
function withCode(text) {
  return text.split(/`([^`]+)`/).map((part, i) => (i % 2 ? el('code', { text: part }) : part));
}

function kmh(mps) {
  return Math.round(mps * 3.6 * 10) / 10;
}

export class SettingsForm {
  /**
   * @param {HTMLElement} container  where the fieldsets go
   * @param {object} schemas          from settingsSchemas()
   * @param {object} o
   * @param {string[]} o.sections     e.g. ['filter', 'alerts']
   * @param {'settings'|'override'} [o.mode]
   * @param {boolean} [o.readOnly]
   * @param {string} [o.idPrefix]     keeps ids unique when a page has two forms
   */
  constructor(container, schemas, o) {
    this.mode = o.mode || 'settings';
    this.readOnly = !!o.readOnly;
    this.prefix = o.idPrefix || 'setting';
    this.fields = new Map(); // 'section.key' -> field
    this.current = {};
    this.inherited = {};
    const sets = o.sections.map((section) => this.fieldset(section, schemas[section]));
    container.replaceChildren(...sets);
  }

  fieldset(section, schema) {
    const set = el('fieldset', { className: 'settings__section', attrs: { 'data-section': section } });
    set.append(el('legend', { className: 'settings__legend', text: SECTION_TITLES[section] || section }));
    if (schema.description && this.mode === 'settings') {
      set.append(el('p', { className: 'settings__lede muted' }, ...withCode(schema.description)));
    }
    for (const [key, prop] of Object.entries(schema.properties || {})) {
      set.append(this.field(section, key, prop));
    }
    return set;
  }

  field(section, key, prop) {
    const path = `${section}.${key}`;
    const id = `${this.prefix}-${section}-${key}`;
    const types = typesOf(prop);
    const f = {
      path,
      key,
      prop,
      boolean: types.includes('boolean'),
      integer: types.includes('integer'),
      nullable: types.includes('null'),
      text: types.includes('string'),
    };
    const row = el('div', { className: 'setting', attrs: { 'data-key': path } });
    const label = el('label', { className: 'setting__label', text: labelOf(key), attrs: { for: id } });
    const control = el('div', { className: 'setting__control' });
    const helpId = `${id}-help`;

    if (this.mode === 'override') {
      f.own = el('input', { attrs: { type: 'checkbox', id: `${id}-own`, 'aria-label': `${labelOf(key)}: this vehicle's own value` } });
      f.own.className = 'setting__own-box';
      f.own.addEventListener('change', () => this.sync(f));
      control.append(el('label', { className: 'setting__toggle', attrs: { for: `${id}-own` } }, f.own, 'Own value'));
    }

    if (f.boolean) {
      f.input = el('input', { attrs: { type: 'checkbox', id, 'aria-describedby': helpId } });
      control.append(el('span', { className: 'setting__toggle' }, f.input, el('span', { text: 'On' })));
    } else if (f.text && prop.enum) {
      f.input = el('select', { className: 'input setting__input', attrs: { id, 'aria-describedby': helpId } });
      for (const value of prop.enum) f.input.append(el('option', { text: value, attrs: { value } }));
      control.append(f.input);
    } else if (f.text) {
      f.input = el('input', {
        className: 'input setting__input setting__input--text',
        attrs: { type: 'text', id, maxlength: prop.maxLength, 'aria-describedby': helpId, autocomplete: 'off' },
      });
      if (key === 'time_zone' && Intl.supportedValuesOf) {
        const list = el('datalist', { attrs: { id: `${id}-choices` } });
        for (const zone of Intl.supportedValuesOf('timeZone')) list.append(el('option', { attrs: { value: zone } }));
        f.input.setAttribute('list', list.id);
        control.append(list);
      }
      control.append(f.input);
    } else {
      f.input = el('input', {
        className: 'input setting__input',
        attrs: {
          type: 'number',
          id,
          inputmode: f.integer ? 'numeric' : 'decimal',
          step: f.integer ? '1' : 'any',
          min: prop.minimum,
          max: prop.maximum,
          'aria-describedby': helpId,
        },
      });
      control.append(f.input);
      const unit = unitOf(key);
      if (unit) control.append(el('abbr', { className: 'setting__unit', text: unit[0], attrs: { title: unit[1] } }));
      if (unit && unit[0] === 'm/s') {
        f.kmh = el('span', { className: 'setting__kmh muted', attrs: { 'aria-live': 'polite' } });
        f.input.addEventListener('input', () => this.showKmh(f));
        control.append(f.kmh);
      }
      if (f.nullable) {
        f.off = el('input', { attrs: { type: 'checkbox', id: `${id}-off` } });
        f.off.addEventListener('change', () => this.sync(f));
        control.append(el('label', { className: 'setting__toggle', attrs: { for: `${id}-off` } }, f.off, 'Off'));
      }
    }

    const help = prop.description ? withCode(prop.description.replace(/\s+/g, ' ')) : [];
    const limits = [];
    if (prop.minimum != null && prop.maximum != null) limits.push(`${prop.minimum} to ${prop.maximum}`);
    else if (prop.minimum != null) limits.push(`at least ${prop.minimum}`);
    else if (prop.maximum != null) limits.push(`at most ${prop.maximum}`);
    const defaults = [`Default ${withUnit(key, prop.default ?? null)}`, ...limits];
    if (f.nullable) defaults.push('can be turned off');
    const helpEl = el('p', { className: 'setting__help muted', attrs: { id: helpId } }, ...help);
    f.defaultEl = el('span', { className: 'setting__default', text: defaults.join(' · ') });
    helpEl.append(el('br'), f.defaultEl);
    if (this.mode === 'override') {
      f.inheritedEl = el('span', { className: 'setting__inherited' });
      helpEl.append(el('br'), f.inheritedEl);
    }
    row.append(label, control, helpEl);
    f.row = row;
    this.fields.set(path, f);
    return row;
  }

  showKmh(f) {
    if (!f.kmh) return;
    const v = f.input.value === '' ? NaN : Number(f.input.value);
    f.kmh.textContent = Number.isFinite(v) && !(f.off && f.off.checked) ? `= ${kmh(v)} km/h` : '';
  }

  /** Enable what may be edited: nothing when read-only; an inherited key only once it is the vehicle's own; a value only while not off. */
  sync(f) {
    const own = !f.own || f.own.checked;
    if (f.own) {
      f.own.disabled = this.readOnly;
      if (!own) this.showValue(f, this.inherited[f.path]);
    }
    const editable = !this.readOnly && own;
    if (f.off) f.off.disabled = !editable;
    f.input.disabled = !editable || (f.off ? f.off.checked : false);
    f.row.dataset.own = String(own);
    this.showKmh(f);
  }

  showValue(f, value) {
    if (f.boolean) {
      f.input.checked = !!value;
      return;
    }
    if (f.off) f.off.checked = value === null;
    f.input.value = value == null ? '' : String(value);
  }

  /**
   * Show `values` ({section: {key: value}}). In override mode `values` are the vehicle's own keys
   * and `inherited` the organisation's settings, shown for the keys it does not set.
   */
  set(values, inherited = {}) {
    this.current = {};
    this.inherited = {};
    for (const [path, f] of this.fields) {
      const [section, key] = path.split('.');
      const sectionValues = values[section] || {};
      const has = Object.prototype.hasOwnProperty.call(sectionValues, key);
      this.current[path] = has ? sectionValues[key] : undefined;
      if (this.mode === 'override') {
        const from = (inherited[section] || {})[key];
        this.inherited[path] = from;
        f.own.checked = has;
        f.inheritedEl.textContent = `Organisation: ${withUnit(key, from ?? null)}`;
        this.showValue(f, has ? sectionValues[key] : from);
      } else {
        this.showValue(f, sectionValues[key]);
      }
      this.sync(f);
    }
  }

  /** What a field holds now: { value } or { error } for an empty field or text that is no number. */
  read(f) {
    if (f.boolean) return { value: f.input.checked };
    if (f.text) return f.input.value.trim() ? { value: f.input.value.trim() } : { error: 'Enter a value.' };
    if (f.off && f.off.checked) return { value: null };
    const raw = f.input.value.trim();
    if (raw === '') {
      // A number input reports text it cannot read as empty; say which it is.
      if (f.input.validity && f.input.validity.badInput) return { error: 'Enter a number.' };
      return { error: f.nullable ? 'Enter a number, or turn it off.' : 'Enter a number.' };
    }
    return { value: Number(raw) };
  }

  /** The keys changed since `set`, as a PATCH body, and the fields that hold no number. */
  changes() {
    const patch = {};
    const errors = [];
    for (const [path, f] of this.fields) {
      const { value, error } = this.read(f);
      if (error) {
        errors.push([path, error]);
        continue;
      }
      if (value === this.current[path]) continue;
      const [section, key] = path.split('.');
      (patch[section] ||= {})[key] = value;
    }
    return { patch, errors };
  }

  /** The vehicle's own keys as they stand (a PUT body), and the fields that hold no number. */
  overrides() {
    const body = {};
    const errors = [];
    for (const [path, f] of this.fields) {
      if (!f.own.checked) continue;
      const { value, error } = this.read(f);
      if (error) errors.push([path, error]);
      else body[f.key] = value;
    }
    return { body, errors };
  }

  /** The input a refusal names (`alerts.speed_limit_mps`), or null. */
  inputFor(path) {
    const f = this.fields.get(path);
    if (!f) return null;
    return f.input.disabled && f.off ? f.off : f.input;
  }
}
