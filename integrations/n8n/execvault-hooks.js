'use strict';
/**
 * execvault for n8n: an external hook file (EXTERNAL_HOOK_FILES=/path/to/execvault-hooks.js).
 *
 * Before each execution runs it appends a snapshot record (the workflow as it will run, n8n's
 * execution id, mode, trigger) to a local durable spool; when the execution ends (success, error,
 * canceled, crashed, or `waiting` then again after the resume) it appends the final state
 * (n8n's IRun). `execvault relay --spool DIR` delivers the spool to the archive. Nothing here
 * talks to the network and no error of ours reaches n8n: every entry point catches everything.
 *
 * Configuration (environment of the n8n process; README.md beside this file):
 *   EXECVAULT_SPOOL_DIR          the spool folder (default: <N8N_USER_FOLDER or ~>/.n8n/execvault-spool)
 *   EXECVAULT_ENABLED            on/off (default on; "false", "0", "off" turn it off)
 *   EXECVAULT_WORKFLOWS_ALLOW    comma-separated workflow ids: only these (default: all)
 *   EXECVAULT_WORKFLOWS_DENY     comma-separated workflow ids: never these
 *   EXECVAULT_SAMPLE_PERCENT     0-100, by a hash of the execution id (default 100)
 *   EXECVAULT_SPOOL_MAX_BYTES    the spool's size bound (default 1073741824)
 *   EXECVAULT_FSYNC_INTERVAL_MS  group fsync interval (default 200)
 *   EXECVAULT_EXECUTION_ID_PREFIX  prepended to n8n's execution ids (several n8n databases, one archive)
 *
 * The pre-run moment with an execution id is n8n-core's `workflowExecuteBefore` lifecycle event,
 * reached through @n8n/decorators' LifecycleMetadata registry (n8n-internal; tested versions in
 * README.md). Where that registry is missing, the snapshot is taken when the run ends and marked
 * `source: "post-run"`.
 */
const fs = require('fs');
const os = require('os');
const path = require('path');
const { createRequire } = require('module');
const { SpoolWriter } = require('./spool.js');

const HOOK_VERSION = '1.0.0';

function readConfig(env) {
  const list = (text) =>
    new Set(
      String(text || '')
        .split(',')
        .map((s) => s.trim())
        .filter(Boolean),
    );
  const number = (text, fallback, low, high) => {
    if (text === undefined || String(text).trim() === '') return fallback;
    const value = Number(text);
    if (!Number.isFinite(value) || value < low || value > high) {
      throw new Error(`must be a number from ${low} to ${high}, got ${JSON.stringify(text)}`);
    }
    return value;
  };
  const prefix = (text) => {
    const value = String(text ?? '').trim();
    if (!/^([A-Za-z0-9][A-Za-z0-9_.:@-]{0,63})?$/.test(value) || value.includes('..')) {
      throw new Error(`EXECVAULT_EXECUTION_ID_PREFIX must be up to 64 of A-Z a-z 0-9 _ . : @ -, starting with a letter or digit, got ${JSON.stringify(text)}`);
    }
    return value;
  };
  const userFolder = env.N8N_USER_FOLDER || os.homedir();
  const enabled = !['false', '0', 'off', 'no'].includes(String(env.EXECVAULT_ENABLED ?? 'on').trim().toLowerCase());
  return {
    enabled,
    spoolDir: env.EXECVAULT_SPOOL_DIR || path.join(userFolder, '.n8n', 'execvault-spool'),
    allow: list(env.EXECVAULT_WORKFLOWS_ALLOW),
    deny: list(env.EXECVAULT_WORKFLOWS_DENY),
    samplePercent: number(env.EXECVAULT_SAMPLE_PERCENT, 100, 0, 100),
    maxBytes: number(env.EXECVAULT_SPOOL_MAX_BYTES, 1024 * 1024 * 1024, 1024, Number.MAX_SAFE_INTEGER),
    fsyncIntervalMs: number(env.EXECVAULT_FSYNC_INTERVAL_MS, 200, 1, 60000),
    idPrefix: prefix(env.EXECVAULT_EXECUTION_ID_PREFIX),
  };
}

/** FNV-1a of the execution id, to a bucket 0..9999: the same answer in every process. */
function bucket(executionId) {
  let hash = 0x811c9dc5;
  const text = String(executionId);
  for (let i = 0; i < text.length; i++) {
    hash ^= text.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193) >>> 0;
  }
  return hash % 10000;
}

/** An execution id n8n could have made: a non-empty string or a whole number. */
function validId(value) {
  return (typeof value === 'string' && value.length > 0 && value.length <= 256) || Number.isSafeInteger(value);
}

function isObject(value) {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function selected(config, workflowId, executionId) {
  if (!config.enabled) return false;
  const id = workflowId === undefined || workflowId === null ? '' : String(workflowId);
  if (config.deny.has(id)) return false;
  if (config.allow.size > 0 && !config.allow.has(id)) return false;
  return bucket(executionId) < Math.round(config.samplePercent * 100);
}

const TRIGGER_KINDS = {
  'n8n-nodes-base.webhook': 'webhook',
  'n8n-nodes-base.formTrigger': 'form',
  'n8n-nodes-base.scheduleTrigger': 'schedule',
  'n8n-nodes-base.cron': 'schedule',
  'n8n-nodes-base.interval': 'schedule',
  'n8n-nodes-base.manualTrigger': 'manual',
  'n8n-nodes-base.executeWorkflowTrigger': 'subworkflow',
  'n8n-nodes-base.errorTrigger': 'error',
  '@n8n/n8n-nodes-langchain.chatTrigger': 'chat',
};

/** n8n's execution mode → the archive's trigger type (the trigger node refines webhook/trigger). */
const MODE_TRIGGER = {
  manual: 'manual',
  cli: 'cli',
  retry: 'retry',
  error: 'error',
  integrated: 'subworkflow',
  internal: 'internal',
  evaluation: 'evaluation',
  chat: 'chat',
};

/** The node that started the run: n8n's start data, else the only enabled trigger. */
function triggerNode(workflowData, executionData) {
  const nodes = Array.isArray(workflowData && workflowData.nodes) ? workflowData.nodes : [];
  const byName = new Map(nodes.map((n) => [n.name, n]));
  const stack = executionData && executionData.executionData && executionData.executionData.nodeExecutionStack;
  if (Array.isArray(stack) && stack.length > 0 && stack[0].node && byName.has(stack[0].node.name)) {
    return byName.get(stack[0].node.name);
  }
  const start = executionData && executionData.startData;
  if (start && Array.isArray(start.destinationNode ? [] : start.startNodes) && start.startNodes.length > 0) {
    const name = start.startNodes[0].name || start.startNodes[0];
    if (byName.has(name)) return byName.get(name);
  }
  const triggers = nodes.filter(
    (n) => !n.disabled && typeof n.type === 'string' && (TRIGGER_KINDS[n.type] || /trigger$/i.test(n.type) || n.type === 'n8n-nodes-base.webhook'),
  );
  return triggers.length === 1 ? triggers[0] : null;
}

function triggerType(mode, node) {
  if (MODE_TRIGGER[mode]) return MODE_TRIGGER[mode];
  const kind = node ? TRIGGER_KINDS[node.type] : undefined;
  if (mode === 'webhook') return kind === 'form' || kind === 'chat' ? kind : 'webhook';
  if (mode === 'trigger') {
    if (kind && kind !== 'manual' && kind !== 'webhook') return kind;
    return node && /trigger$/i.test(node.type) ? 'event' : 'trigger';
  }
  return typeof mode === 'string' && mode ? mode : 'unknown';
}

/** The node a finished run started from: the first run of its run data that no node fed. */
function startedFrom(workflowData, fullRunData) {
  const runData = fullRunData && fullRunData.data && fullRunData.data.resultData && fullRunData.data.resultData.runData;
  if (!isObject(runData)) return null;
  let best = null;
  for (const [name, runs] of Object.entries(runData)) {
    const first = Array.isArray(runs) ? runs[0] : null;
    if (!first || (Array.isArray(first.source) && first.source.length > 0 && first.source[0])) continue;
    const order = typeof first.executionIndex === 'number' ? first.executionIndex : first.startTime;
    if (best === null || order < best.order) best = { name, order };
  }
  const nodes = Array.isArray(workflowData && workflowData.nodes) ? workflowData.nodes : [];
  return best ? nodes.find((n) => n.name === best.name) || null : null;
}

/** JSON of a value that may hold cycles, BigInts or functions (n8n's run data sometimes does). */
function toJson(value) {
  try {
    return JSON.stringify(value);
  } catch {
    const seen = new WeakSet();
    return JSON.stringify(value, (key, v) => {
      if (typeof v === 'bigint') return v.toString();
      if (typeof v === 'object' && v !== null) {
        if (seen.has(v)) return '[Circular]';
        seen.add(v);
      }
      return v;
    });
  }
}

class Integration {
  constructor(env, log) {
    this.log = log;
    this.config = null;
    this.writer = null;
    this.failed = false;
    // execution ids whose snapshot this process spooled (bounded, oldest forgotten first): a
    // resumed Wait run, or a before-event arriving after a cancel, is not snapshotted twice
    this.snapshotted = new Map();
    try {
      this.config = readConfig(env);
    } catch (error) {
      this.failed = true;
      this.log(`execvault: configuration refused, the integration is off: ${error.message}`);
    }
  }

  spool() {
    if (this.writer !== null || this.failed) return this.writer;
    try {
      this.writer = new SpoolWriter({
        dir: this.config.spoolDir,
        maxBytes: this.config.maxBytes,
        fsyncIntervalMs: this.config.fsyncIntervalMs,
        log: this.log,
      });
      const close = () => this.writer && this.writer.close();
      process.once('exit', close);
    } catch (error) {
      this.failed = true;
      this.log(`execvault: cannot open the spool ${this.config.spoolDir}, the integration is off: ${error.message}`);
    }
    return this.writer;
  }

  remember(executionId) {
    this.snapshotted.set(executionId, Date.now());
    if (this.snapshotted.size > 100000) {
      // oldest first (insertion order): a bound, not a cache policy
      const drop = this.snapshotted.size - 50000;
      let n = 0;
      for (const key of this.snapshotted.keys()) {
        if (n++ >= drop) break;
        this.snapshotted.delete(key);
      }
    }
  }

  snapshot(executionId, workflowData, mode, executionData, info, source) {
    const { retryOf, userId } = info || {};
    if (this.failed || !this.config) return;
    if (!validId(executionId) || !isObject(workflowData)) {
      this.log(`execvault: snapshot skipped: n8n passed no execution id or workflow (${typeof executionId})`);
      return;
    }
    const id = this.config.idPrefix + String(executionId);
    const workflowId = workflowData && workflowData.id;
    if (!selected(this.config, workflowId, id) || this.snapshotted.has(id)) return;
    const writer = this.spool();
    if (!writer) return;
    const node = (info && info.node) || triggerNode(workflowData, executionData);
    const body = {
      executionId: id,
      workflow: workflowData,
      triggerType: triggerType(mode, node),
      triggerData: { mode: String(mode), ...(node ? { node: node.name, nodeType: node.type } : {}) },
      createdAt: new Date().toISOString(),
    };
    if (workflowId !== undefined && workflowId !== null && workflowId !== '') body.workflowId = String(workflowId);
    if (retryOf !== undefined && retryOf !== null && retryOf !== '') body.replayOf = this.config.idPrefix + String(retryOf);
    if (userId) body.userId = String(userId);
    if (source) body.source = source;
    if (writer.append('snapshot', id, toJson(body))) this.remember(id);
  }

  finalState(fullRunData, workflowData, executionId) {
    if (this.failed || !this.config) return;
    if (!validId(executionId) || !isObject(fullRunData) || !isObject(workflowData)) {
      this.log(`execvault: final state skipped: n8n passed no execution id, run or workflow (${typeof executionId})`);
      return;
    }
    const id = this.config.idPrefix + String(executionId);
    if (!selected(this.config, workflowData && workflowData.id, id)) return;
    if (!this.snapshotted.has(id)) {
      // no pre-run snapshot from this process: this n8n has no pre-run moment, the run started
      // before a restart (a Wait resumed, a crash recovered) or failed before it began. The
      // snapshot is taken now and says so; where the archive holds one already, the relay
      // counts the service's 409 for it as delivered.
      const node = startedFrom(workflowData, fullRunData);
      this.snapshot(String(executionId), workflowData, fullRunData.mode, null, node ? { node } : {}, 'post-run');
    }
    const writer = this.spool();
    if (!writer) return;
    writer.append('final-state', id, toJson(fullRunData));
    // the id stays remembered after the end: n8n can cancel a run while its pre-run handlers
    // still run, so workflowExecuteBefore may come after the end was recorded (and its
    // snapshot with it); a second snapshot of the same execution would only be refused
  }
}

const integration = new Integration(process.env, (line) => console.error(line));

/** Registers the pre-run handlers with n8n's lifecycle registry; false when it is not there. */
function registerLifecycle() {
  if (integration.failed || !integration.config || !integration.config.enabled) return false;
  try {
    const main = require.main && require.main.filename;
    if (!main) throw new Error('not loaded by n8n');
    const n8nRequire = createRequire(main);
    const decoratorsPath = n8nRequire.resolve('@n8n/decorators');
    const { LifecycleMetadata } = n8nRequire(decoratorsPath);
    const { Container } = createRequire(decoratorsPath)('@n8n/di');
    if (!LifecycleMetadata || !Container) throw new Error('@n8n/decorators has no LifecycleMetadata');
    class ExecVaultLifecycle {
      workflowExecuteBefore(context) {
        try {
          const info = startInfo(String(context.executionId));
          integration.snapshot(context.executionId, context.workflow, context.mode, context.executionData, info);
        } catch (error) {
          integration.log(`execvault: snapshot skipped: ${error && error.message}`);
        }
      }
    }
    Container.set(ExecVaultLifecycle, new ExecVaultLifecycle());
    Container.get(LifecycleMetadata).register({
      handlerClass: ExecVaultLifecycle,
      methodName: 'workflowExecuteBefore',
      eventName: 'workflowExecuteBefore',
    });
    integration.lifecycle = true;
    return true;
  } catch (error) {
    integration.log(`execvault: n8n's lifecycle registry not found (${error && error.message}); snapshots are taken when runs end`);
    return false;
  }
}

/**
 * What n8n knows of a starting execution beyond the lifecycle context: the execution it retries
 * and the user who started it, from n8n's ActiveExecutions service (the data the run was started
 * with). Empty when that service is not there (another n8n version): the snapshot then goes
 * without `replayOf` / `userId`, and its triggerData.mode still says `retry`.
 */
let activeExecutions = null;
function startInfo(executionId) {
  try {
    if (activeExecutions === null) {
      const main = require.main && require.main.filename;
      const n8nRequire = createRequire(main);
      const { ActiveExecutions } = n8nRequire(path.join(path.dirname(main), '..', 'dist', 'active-executions.js'));
      const { Container } = createRequire(n8nRequire.resolve('@n8n/decorators'))('@n8n/di');
      activeExecutions = Container.get(ActiveExecutions);
    }
    const running = activeExecutions.activeExecutions && activeExecutions.activeExecutions[executionId];
    const data = running && running.executionData;
    if (!data) return {};
    return { retryOf: data.retryOf || undefined, userId: data.userId || undefined };
  } catch {
    activeExecutions = false;
    return {};
  }
}

registerLifecycle();

module.exports = {
  workflow: {
    postExecute: [
      async function execvaultPostExecute(fullRunData, workflowData, executionId) {
        try {
          integration.finalState(fullRunData, workflowData, executionId);
        } catch (error) {
          try {
            integration.log(`execvault: final state skipped: ${error && error.message}`);
          } catch {
            // never reach n8n
          }
        }
      },
    ],
  },
};

// for tests and the benchmark (not part of n8n's hook contract; n8n ignores names it does not know
// only inside its resource objects, so these live on a non-enumerable property)
Object.defineProperty(module.exports, '_execvault', {
  value: { integration, readConfig, selected, bucket, triggerType, triggerNode, toJson, HOOK_VERSION },
  enumerable: false,
});
