// De-identification in the browser, before upload: the DICOM PS3.15 Basic
// Application Level Confidentiality Profile, as the server declares it
// (/deidentify-profile.json: converter/deidentify_profile.json, the very
// table `ephemesh deidentify` applies with pydicom).
//
// Nothing is re-encoded. dicom-parser (served from web/node_modules, a
// classic script: the global `dicomParser`) finds where each element sits;
// the new file is spliced from the old one's bytes: an element the profile
// does not name is copied as it was, so the pixel data (native or
// encapsulated, its fragments as they are, never decoded) and the geometry
// (positions, orientation, spacing, rescale, the transfer syntax) stay byte
// for byte.  Named elements are removed (X), emptied (Z), given the dummy of
// their VR (D) or a new UID (U: 2.25.<128 random bits>, the same new UID
// for the same old one within one upload).  Every private element goes.
// Sequences are walked item by item and rebuilt (lengths recomputed) only
// when something inside them changed.  Bytes that belong to no element
// dicom-parser found (a duplicate, trailing junk) are dropped, never copied.
import { deflateSync, inflateSync } from '/vendor/fflate/fflate.js';

const LONG_VRS = new Set(['OB', 'OD', 'OF', 'OL', 'OV', 'OW', 'SQ', 'SV', 'UC', 'UN', 'UR',
                          'UT', 'UV']);
const TEXT_VRS = new Set(['AE', 'AS', 'CS', 'DA', 'DS', 'DT', 'IS', 'LO', 'LT', 'PN', 'SH', 'ST',
                          'TM', 'UC', 'UR', 'UT', 'UI']);
const IMPLICIT_LE = '1.2.840.10008.1.2';
const EXPLICIT_LE = '1.2.840.10008.1.2.1';
const DEFLATED = '1.2.840.10008.1.2.1.99';
const BIG_ENDIAN = '1.2.840.10008.1.2.2';
const DICOMDIR = '1.2.840.10008.1.3.10';
const ITEM_DELIMITER = 'xfffee00d';
const UNDEFINED = 0xFFFFFFFF;

export class NotDicom extends Error {}

/** The declaration, read once: action(tag) is X, Z, D, U or undefined (keep). */
export class Profile {
  constructor(json) {
    const entries = { ...json.tags, ...json.file_meta };
    this.tags = new Map(Object.entries(entries).map(([k, v]) => [k.toLowerCase(), v]));
    this.masks = Object.entries(json.masks).map(([pattern, action]) => [
      parseInt(pattern.replace(/x/g, '0'), 16),
      parseInt([...pattern].map(c => (c === 'x' ? '0' : 'F')).join(''), 16),
      action]);
    this.dummy = json.dummy;
    this.groupLengths = json.group_lengths; // X: every (gggg,0000) but the file meta's goes
    this.added = Object.entries(json.added).map(([k, v]) => [`x${k.toLowerCase()}`, v[1], v[2]]);
  }

  action(tag) {
    const entry = this.tags.get(tag.slice(1));
    if (entry) return entry[0];
    const n = parseInt(tag.slice(1), 16);
    if (tag.endsWith('0000') && !tag.startsWith('x0002') && this.groupLengths) return this.groupLengths;
    for (const [value, mask, action] of this.masks) {
      if (((n & mask) >>> 0) === value) return action;
    }
    return undefined;
  }

  vr(tag) {
    const entry = this.tags.get(tag.slice(1));
    return entry ? entry[2] : undefined;
  }
}

/** A UID nobody else has: 2.25 and 128 random bits (PS3.5 B.2). */
function newUid() {
  const words = crypto.getRandomValues(new Uint32Array(4));
  let n = 0n;
  for (const w of words) n = (n << 32n) | BigInt(w);
  return `2.25.${n}`;
}

const latin1 = new TextDecoder('latin1');
const ascii = s => Uint8Array.from(s, c => c.charCodeAt(0) & 0xff);

function isPrivate(tag) {
  return (parseInt(tag.slice(1, 5), 16) & 1) === 1;
}

/** How a dataset is encoded: implicit or explicit VR, little or big endian. */
class Encoding {
  constructor(implicit, little) { this.implicit = implicit; this.little = little; }

  headerLength(vr) { return this.implicit || !LONG_VRS.has(vr) ? 8 : 12; }

  /** An element's header: tag, VR (explicit), length. */
  header(tag, vr, length) {
    const group = parseInt(tag.slice(1, 5), 16);
    const element = parseInt(tag.slice(5, 9), 16);
    const size = this.headerLength(vr);
    const out = new Uint8Array(size);
    const view = new DataView(out.buffer);
    view.setUint16(0, group, this.little);
    view.setUint16(2, element, this.little);
    if (this.implicit) {
      view.setUint32(4, length, this.little);
    } else if (size === 12) {
      out.set(ascii(vr), 4);
      view.setUint32(8, length, this.little);
    } else {
      out.set(ascii(vr || 'UN'), 4);
      view.setUint16(6, length, this.little);
    }
    return out;
  }

  /** An item, item delimiter or sequence delimiter: (FFFE,xxxx) and a length. */
  marker(element, length) {
    const out = new Uint8Array(8);
    const view = new DataView(out.buffer);
    view.setUint16(0, 0xFFFE, this.little);
    view.setUint16(2, element, this.little);
    view.setUint32(4, length, this.little);
    return out;
  }
}

const size = chunks => chunks.reduce((n, c) => n + c.length, 0);

function padded(text, pad) {
  const bytes = ascii(text);
  if (bytes.length % 2 === 0) return bytes;
  const out = new Uint8Array(bytes.length + 1);
  out.set(bytes);
  out[bytes.length] = pad;
  return out;
}

/** Applies the profile to whole files; one instance maps UIDs for one upload. */
export class Deidentifier {
  constructor(profile) {
    if (typeof dicomParser === 'undefined') throw new Error('dicom-parser is not loaded');
    this.profile = profile;
    this.uids = new Map();
  }

  uid(old) {
    const key = old.replace(/[\0 ]+$/, '').trim();
    if (!key) return key;
    if (!this.uids.has(key)) this.uids.set(key, newUid());
    return this.uids.get(key);
  }

  /**
   * De-identify one file.  Returns {chunks, info} (the new file's bytes in
   * order, and what the converter will see of it), or null for a DICOMDIR
   * index; throws NotDicom for anything dicom-parser cannot read.
   */
  file(bytes) {
    const part10 = bytes.length > 132 && latin1.decode(bytes.subarray(128, 132)) === 'DICM';
    const options = {};
    let inflated = null;
    if (!part10) {
      const guess = guessEncoding(bytes);
      if (!guess) throw new NotDicom('not DICOM');
      options.TransferSyntaxUID = guess;
    }
    // a deflated dataset is parsed from its inflated bytes, from their start
    options.inflater = (array, position) => (inflated = inflateSync(array.subarray(position)));
    let dataSet;
    try {
      dataSet = dicomParser.parseDicom(bytes, options);
    } catch (err) {
      throw new NotDicom('not DICOM');
    }
    const all = Object.values(dataSet.elements);
    const meta = all.filter(e => part10 && e.tag.startsWith('x0002'));
    const body = all.filter(e => !meta.includes(e));
    if (!body.length) throw new NotDicom('no dataset');
    const metaText = tag => {
      const el = meta.find(e => e.tag === tag);
      return el ? latin1.decode(bytes.subarray(el.dataOffset, el.dataOffset + el.length))
        .replace(/[\0 ]+$/, '') : '';
    };
    const syntax = part10 ? metaText('x00020010') : options.TransferSyntaxUID;
    const sopClass = metaText('x00020002') || (dataSet.string('x00080016') || '').trim();
    if (sopClass === DICOMDIR || dataSet.elements.x00041220) return null;
    const encoding = new Encoding(syntax === IMPLICIT_LE, syntax !== BIG_ENDIAN);
    const source = inflated || bytes;
    const start = part10 && !inflated ? Math.max(...meta.map(e => e.dataOffset + e.length)) : 0;
    this.unknownSequences(source, body);
    const datasetChunks = this.dataset(source, body, start, source.length, encoding, true).chunks;
    const chunks = [];
    if (part10) {
      chunks.push(new Uint8Array(128), ascii('DICM'));
      chunks.push(...this.meta(bytes, meta));
    }
    if (inflated) {
      const flat = new Uint8Array(size(datasetChunks));
      let at = 0;
      for (const c of datasetChunks) { flat.set(c, at); at += c.length; }
      chunks.push(deflateSync(flat));
    } else {
      chunks.push(...datasetChunks);
    }
    return { chunks, info: this.info(dataSet) };
  }

  /**
   * An explicit-VR file may hold a sequence as UN of known length, which
   * dicom-parser steps over: when its value starts with an item, read its
   * items (implicit VR little endian, PS3.5 6.2.2) so they are walked too.
   */
  unknownSequences(source, elements) {
    for (const el of elements) {
      if (el.items) {
        for (const item of el.items) this.unknownSequences(source, Object.values(item.dataSet.elements));
      } else if (el.vr === 'UN' && el.length >= 8 && !isPrivate(el.tag)
                 && source[el.dataOffset] === 0xfe && source[el.dataOffset + 1] === 0xff
                 && source[el.dataOffset + 2] === 0x00 && source[el.dataOffset + 3] === 0xe0) {
        const stream = new dicomParser.ByteStream(dicomParser.littleEndianByteArrayParser, source,
                                                  el.dataOffset);
        try {
          dicomParser.readSequenceItemsImplicit(stream, el);
        } catch (err) {
          throw new NotDicom('damaged sequence');
        }
        this.unknownSequences(source, el.items.flatMap(i => Object.values(i.dataSet.elements)));
      }
    }
  }

  /** The file meta group (always explicit VR little endian), its length recomputed. */
  meta(source, elements) {
    const le = new Encoding(false, true);
    const kept = [];
    for (const el of elements.sort((a, b) => a.dataOffset - b.dataOffset)) {
      if (el.tag === 'x00020000') continue;
      const out = this.element(source, el, le);
      if (out) kept.push(...out.chunks);
    }
    const length = new Uint8Array(4);
    new DataView(length.buffer).setUint32(0, size(kept), true);
    return [le.header('x00020000', 'UL', 4), length, ...kept];
  }

  /**
   * The elements of one dataset between start and end, de-identified:
   * {chunks, changed}.  At the top level the profile's added elements
   * (PatientIdentityRemoved, DeidentificationMethod) go in at their place.
   */
  dataset(source, elements, start, end, encoding, top = false) {
    const delimiter = elements.find(e => e.tag === ITEM_DELIMITER);
    if (delimiter) end = delimiter.dataOffset - 8; // rebuilt items get a new one
    const added = top ? [...this.profile.added] : [];
    const sorted = elements.filter(e => e.tag !== ITEM_DELIMITER)
      .sort((a, b) => a.dataOffset - b.dataOffset);
    const chunks = [];
    let position = start;
    let changed = top;
    for (const el of sorted) {
      while (added.length && added[0][0] <= el.tag) chunks.push(this.added(added.shift(), encoding));
      const from = el.dataOffset - encoding.headerLength(elementVr(el, this.profile));
      if (from !== position) changed = true; // bytes of no element: dropped
      position = elementEnd(el);
      if (top && this.profile.added.some(a => a[0] === el.tag)) continue; // replaced above
      const out = this.element(source, el, encoding);
      if (!out) { changed = true; continue; }
      changed = changed || out.changed;
      chunks.push(...out.chunks);
    }
    while (added.length) chunks.push(this.added(added.shift(), encoding));
    if (position !== end) changed = true;
    return { chunks, changed };
  }

  added([tag, vr, value], encoding) {
    const bytes = padded(value, vr === 'UI' ? 0 : 0x20);
    const out = new Uint8Array(encoding.headerLength(vr) + bytes.length);
    out.set(encoding.header(tag, vr, bytes.length));
    out.set(bytes, encoding.headerLength(vr));
    return out;
  }

  /** One element, de-identified: {chunks, changed}, or null when it goes. */
  element(source, el, encoding) {
    if (isPrivate(el.tag)) return null;
    const vr = elementVr(el, this.profile);
    const action = this.profile.action(el.tag);
    const whole = () => [source.subarray(el.dataOffset - encoding.headerLength(vr),
                                         elementEnd(el))];
    const sequence = el.items !== undefined;
    if (action === undefined || (action === 'U' && sequence)) {
      if (!sequence) return { chunks: whole(), changed: false };
      return this.sequence(source, el, vr, encoding, whole);
    }
    if (action === 'X') return null;
    const value = (text, pad) => {
      const bytes = padded(text, pad);
      return { chunks: [encoding.header(el.tag, vr, bytes.length), bytes], changed: true };
    };
    if (action === 'U' || (action === 'D' && vr === 'UI')) {
      const old = latin1.decode(source.subarray(el.dataOffset, el.dataOffset + el.length));
      return value(old.split('\\').map(u => this.uid(u)).join('\\'), 0);
    }
    if (sequence || vr === 'SQ') return { chunks: [encoding.header(el.tag, vr, 0)], changed: true };
    if (action === 'D' && TEXT_VRS.has(vr)) return value(this.profile.dummy[vr] || '', 0x20);
    return { chunks: [encoding.header(el.tag, vr, 0)], changed: true }; // Z: empty
  }

  /** A sequence: copied whole when nothing in it changes, else rebuilt. */
  sequence(source, el, vr, encoding, whole) {
    // an explicit-VR file may hold a sequence as UN: its items are implicit little endian
    const inner = vr === 'UN' ? new Encoding(true, true) : encoding;
    const items = el.items.map(item => {
      const end = item.dataOffset + item.length;
      const out = this.dataset(source, Object.values(item.dataSet.elements), item.dataOffset,
                               end, inner);
      return { item, ...out };
    });
    if (!items.some(i => i.changed)) return { chunks: whole(), changed: false };
    const body = [];
    for (const { item, chunks } of items) {
      if (item.hadUndefinedLength) {
        body.push(inner.marker(0xE000, UNDEFINED), ...chunks, inner.marker(0xE00D, 0));
      } else {
        body.push(inner.marker(0xE000, size(chunks)), ...chunks);
      }
    }
    if (el.hadUndefinedLength) {
      return { chunks: [encoding.header(el.tag, vr, UNDEFINED), ...body,
                        inner.marker(0xE0DD, 0)], changed: true };
    }
    return { chunks: [encoding.header(el.tag, vr, size(body)), ...body], changed: true };
  }

  /** What the converter will see of a file (elements the profile keeps, UIDs as mapped). */
  info(dataSet) {
    const text = tag => (dataSet.string(tag) || '').trim();
    const series = text('x0020000e');
    let rows = 0, columns = 0;
    try { rows = dataSet.uint16('x00280010') || 0; columns = dataSet.uint16('x00280011') || 0; }
    catch (err) { rows = columns = 0; }
    return {
      series: series ? this.uid(series) : '',
      modality: text('x00080060') || '?',
      number: text('x00200011'),
      rows, columns,
      frames: parseInt(text('x00280008') || '1', 10) || 1,
      image: dataSet.elements.x7fe00010 !== undefined || dataSet.elements.x7fe00008 !== undefined,
    };
  }
}

/** A file without preamble: its transfer syntax as pydicom would guess it, or null. */
function guessEncoding(bytes) {
  if (bytes.length < 8) return null;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const little = view.getUint16(0, true);
  const big = view.getUint16(0, false);
  const explicit = /^[A-Z]{2}$/.test(latin1.decode(bytes.subarray(4, 6)));
  if (little === 0x0008 || little === 0x0002) return explicit ? EXPLICIT_LE : IMPLICIT_LE;
  if (big === 0x0008 && explicit) return BIG_ENDIAN;
  return null;
}

/** The VR dicom-parser read (explicit), else the declared one, else SQ for a parsed sequence. */
function elementVr(el, profile) {
  if (el.vr) return el.vr;
  return profile.vr(el.tag) || (el.items !== undefined ? 'SQ' : undefined);
}

/** Where an element's bytes end, whatever dicom-parser counted in its length. */
function elementEnd(el) {
  if (el.hadUndefinedLength && el.items !== undefined) return el.dataOffset + el.length + 8;
  return el.dataOffset + el.length;
}
