'use strict';
/**
 * The execvault delivery spool, writer side (format: docs/spool.md, version 1).
 *
 * One writer per process owns its `.open` segment. `append()` is the hot path: one synchronous
 * write(2) of a whole line (CRC-32, space, JSON, newline) to the page cache, so the record
 * survives kill -9 of this process once append() returns. fdatasync happens on a timer through
 * libuv's thread pool (group fsync, off the event loop); rotation and the size bound are checked
 * on the same timer. Nothing here throws to the caller: append() answers true (appended) or false
 * (dropped: spool full, or the spool is unusable), and the reason is counted and logged.
 */
const fs = require('fs');
const os = require('os');
const path = require('path');
const zlib = require('zlib');
const crypto = require('crypto');

const RECORD_VERSION = 1;

function crc32Hex(buffer) {
  return (zlib.crc32(buffer) >>> 0).toString(16).padStart(8, '0');
}

function procStart() {
  try {
    const stat = fs.readFileSync('/proc/self/stat', 'utf8');
    // fields after the command (which may hold spaces) start after the last ')'
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const value = Number(fields[19]); // field 22 of stat(5): starttime, in clock ticks
    return Number.isSafeInteger(value) ? value : null;
  } catch {
    return null;
  }
}

function safeName(text) {
  return String(text).replace(/[^A-Za-z0-9_.-]/g, '_').slice(0, 64) || 'x';
}

class SpoolWriter {
  /**
   * @param {object} options dir (required), maxBytes, fsyncIntervalMs, segmentBytes,
   *   segmentSeconds, log (a function taking one line; default console.error)
   */
  constructor(options) {
    this.dir = options.dir;
    this.maxBytes = options.maxBytes ?? 1024 * 1024 * 1024;
    this.fsyncIntervalMs = options.fsyncIntervalMs ?? 200;
    this.segmentBytes = options.segmentBytes ?? 16 * 1024 * 1024;
    this.segmentSeconds = options.segmentSeconds ?? 60;
    this.log = options.log ?? ((line) => console.error(line));
    this.writer = `${safeName(os.hostname())}-${process.pid}-${crypto.randomBytes(3).toString('hex')}`;
    this.segmentsDir = path.join(this.dir, 'segments');
    this.writersDir = path.join(this.dir, 'writers');
    // the spool holds records before the service sanitizes them: owner-only, like n8n's own
    // database (the relay runs as n8n's user)
    fs.mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    fs.mkdirSync(this.segmentsDir, { recursive: true, mode: 0o700 });
    fs.mkdirSync(this.writersDir, { recursive: true, mode: 0o700 });
    this.fd = null;
    this.segment = null;
    this.segmentStarted = 0;
    this.lastSegmentMs = 0;
    this.segmentSize = 0;
    this.dirty = false;
    this.syncing = false;
    this.spoolBytes = this.measure();
    this.appendedSinceMeasure = 0;
    this.stats = {
      v: RECORD_VERSION,
      writer: this.writer,
      pid: process.pid,
      host: os.hostname(),
      procStart: procStart(),
      startedAt: new Date().toISOString(),
      appended: 0,
      dropped: 0,
      droppedFull: 0,
      droppedError: 0,
      fullSince: null,
      closed: false,
      lastError: null,
      updatedAt: null,
    };
    this.lastAlarm = 0;
    this.statsDirty = true;
    this.writeStats();
    this.timer = setInterval(() => this.tick(), this.fsyncIntervalMs);
    this.timer.unref();
    this.closed = false;
  }

  /** Total bytes of the spool's segments (on the timer, never on the hot path). */
  measure() {
    let total = 0;
    try {
      for (const name of fs.readdirSync(this.segmentsDir)) {
        try {
          total += fs.statSync(path.join(this.segmentsDir, name)).size;
        } catch {
          // deleted by the relay meanwhile
        }
      }
    } catch {
      // the folder went away: the next open recreates it
    }
    return total;
  }

  openSegment() {
    fs.mkdirSync(this.segmentsDir, { recursive: true, mode: 0o700 });
    // names must be unique per writer: a rotation within the same millisecond takes the next one
    const now = Math.max(Date.now(), this.lastSegmentMs + 1);
    this.lastSegmentMs = now;
    this.segment = path.join(this.segmentsDir, `${String(now).padStart(13, '0')}-${this.writer}.open`);
    this.fd = fs.openSync(this.segment, 'a', 0o600);
    this.segmentStarted = now;
    this.segmentSize = 0;
  }

  closeSegment() {
    if (this.fd === null) return;
    const fd = this.fd;
    const segment = this.segment;
    this.fd = null;
    this.segment = null;
    try {
      fs.fdatasyncSync(fd);
    } catch {
      // reported by the next append's failure, if the disk is gone
    }
    fs.closeSync(fd);
    this.dirty = false;
    if (this.segmentSize === 0) {
      fs.rmSync(segment, { force: true });
    } else {
      fs.renameSync(segment, segment.replace(/\.open$/, '.seg'));
    }
  }

  /**
   * Append one record; true when it is in the spool. Never throws.
   * @param {'snapshot'|'final-state'} kind
   * @param {string} executionId
   * @param {object|string} body the request body, or its JSON text already serialized
   */
  append(kind, executionId, body) {
    if (this.closed) return false;
    try {
      const bodyJson = typeof body === 'string' ? body : JSON.stringify(body);
      if (typeof bodyJson !== 'string' || bodyJson[0] !== '{') {
        throw new Error(`a ${kind} body must be a JSON object`);
      }
      const json =
        `{"v":${RECORD_VERSION},"kind":${JSON.stringify(kind)},` +
        `"executionId":${JSON.stringify(String(executionId))},` +
        `"at":${JSON.stringify(new Date().toISOString())},"body":${bodyJson}}`;
      const payload = Buffer.from(json, 'utf8');
      const line = Buffer.allocUnsafe(payload.length + 10);
      line.write(crc32Hex(payload), 0, 'latin1');
      line[8] = 0x20;
      payload.copy(line, 9);
      line[line.length - 1] = 0x0a;
      if (this.spoolBytes + this.appendedSinceMeasure + line.length > this.maxBytes) {
        this.drop('full');
        return false;
      }
      if (this.fd === null) this.openSegment();
      let written = 0;
      while (written < line.length) {
        written += fs.writeSync(this.fd, line, written, line.length - written);
      }
      this.segmentSize += line.length;
      this.appendedSinceMeasure += line.length;
      this.dirty = true;
      this.stats.appended += 1;
      this.statsDirty = true;
      if (this.stats.fullSince !== null) this.stats.fullSince = null;
      return true;
    } catch (error) {
      this.stats.lastError = String(error && error.message ? error.message : error).slice(0, 500);
      this.drop('error');
      return false;
    }
  }

  drop(reason) {
    this.stats.dropped += 1;
    if (reason === 'full') {
      this.stats.droppedFull += 1;
      if (this.stats.fullSince === null) this.stats.fullSince = new Date().toISOString();
    } else {
      this.stats.droppedError += 1;
    }
    this.statsDirty = true;
    const now = Date.now();
    if (now - this.lastAlarm >= 60000) {
      this.lastAlarm = now;
      const why =
        reason === 'full'
          ? `spool full (${this.maxBytes} bytes in ${this.segmentsDir}); is the relay running?`
          : `cannot write to ${this.segmentsDir}: ${this.stats.lastError}`;
      this.log(`execvault: ${why} ${this.stats.dropped} record(s) dropped so far`);
    }
  }

  /** The timer: group fsync, rotation, the size bound, the writer's state file. */
  tick() {
    try {
      if (this.fd !== null) {
        const age = Date.now() - this.segmentStarted;
        if (
          this.segmentSize > 0 &&
          (this.segmentSize >= this.segmentBytes || age >= this.segmentSeconds * 1000) &&
          !this.syncing
        ) {
          this.closeSegment();
        } else if (this.dirty && !this.syncing) {
          this.dirty = false;
          this.syncing = true;
          const fd = this.fd;
          fs.fdatasync(fd, () => {
            this.syncing = false;
          });
        }
      }
      this.spoolBytes = this.measure();
      this.appendedSinceMeasure = 0;
      if (this.statsDirty) this.writeStats();
    } catch (error) {
      this.stats.lastError = String(error && error.message ? error.message : error).slice(0, 500);
    }
  }

  writeStats() {
    this.statsDirty = false;
    this.stats.updatedAt = new Date().toISOString();
    const target = path.join(this.writersDir, `${this.writer}.json`);
    const temp = `${target}.tmp`;
    try {
      fs.writeFileSync(temp, JSON.stringify(this.stats), { mode: 0o600 });
      fs.renameSync(temp, target);
    } catch {
      // the state file is a report, not the data: the next tick tries again
    }
  }

  /** Flush and close: fsync the open segment and mark it closed (process exit, tests). */
  close() {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.timer);
    try {
      this.closeSegment();
    } catch {
      // nothing more to do at exit
    }
    this.stats.closed = true;
    this.writeStats();
  }
}

module.exports = { SpoolWriter, crc32Hex, RECORD_VERSION };
