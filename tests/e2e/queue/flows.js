#!/usr/bin/env node
// Test flows for the Flowise 3.1.2 queue-mode end-to-end test: Agentflow V2
// flows (chatflow type "AGENTFLOW") that need no LLM, no credential and no
// network, and whose answer is known in advance.
//
//   FAST: Start (startAgentflow v1.1, chat input)
//           -> Direct Reply (directReplyAgentflow v1.0), message "echo: {{ question }}"
//         answer: "echo: <question>"
//   SLOW: Start (startAgentflow v1.1, chat input)
//           -> Custom Function (customFunctionAgentflow v1.1): waits N ms with
//              `await new Promise(r => setTimeout(r, N))` in Flowise's NodeVM
//              sandbox (no E2B unless E2B_APIKEY is set), returns a string
//           -> Direct Reply (directReplyAgentflow v1.0), message "{{ customFunctionAgentflow_0 }}"
//         answer: "slow done after <N> ms: <question>"
//         N is fixed (default 6000), or with `slow question` taken from the
//         first integer in the question (6000 when it has none; capped at 600000).
//
// The prediction's JSON has the answer in .text (and the trace in
// .agentFlowExecutedData). POST /api/v1/prediction/<id> is on Flowise's
// whitelist: no cookie or API key is needed unless the flow is given an
// apikeyid.
//
// The node data mirror what the Flowise UI saves (see
// flowise/marketplaces/agentflowsv2/*.json): the server reads nodes[i].id,
// data.name (selects the component), data.label, data.inputs, and the edges'
// source/target (sourceHandle "<id>-output-<name>", index 0).
//
// Usage (prints the JSON body for POST /api/v1/chatflows):
//   node flows.js fast [name]
//   node flows.js slow [ms|question] [name]
// A name may also be given as --name=<name>. Dependency-free; runs on Node 18+.
'use strict';

function inputParam(nodeId, p) {
  return { ...p, id: `${nodeId}-input-${p.name}-${p.type}`, display: true };
}

function node(id, def, inputs, x) {
  const outputAnchors = def.hideOutput ? [] : [{ id: `${id}-output-${def.name}`, label: def.label, name: def.name }];
  const data = {
    id,
    label: def.label,
    version: def.version,
    name: def.name,
    type: def.type,
    color: def.color,
    ...(def.hideInput ? { hideInput: true } : {}),
    ...(def.hideOutput ? { hideOutput: true } : {}),
    baseClasses: [def.type],
    category: 'Agent Flows',
    description: def.description,
    inputParams: def.inputParams.map((p) => inputParam(id, p)),
    inputAnchors: [],
    inputs,
    outputAnchors,
    outputs: {},
    selected: false,
  };
  return {
    id,
    type: 'agentFlow',
    position: { x, y: 60 },
    positionAbsolute: { x, y: 60 },
    width: 180,
    height: 66,
    selected: false,
    dragging: false,
    data,
  };
}

function edge(src, srcDef, tgt, srcColor, tgtColor) {
  const sourceHandle = `${src}-output-${srcDef.name}`;
  return {
    source: src,
    sourceHandle,
    target: tgt,
    targetHandle: tgt,
    data: { sourceColor: srcColor, targetColor: tgtColor, isHumanInput: false },
    type: 'agentFlow',
    id: `${src}-${sourceHandle}-${tgt}-${tgt}`,
  };
}

const START = {
  label: 'Start',
  name: 'startAgentflow',
  version: 1.1,
  type: 'Start',
  color: '#7EE787',
  hideInput: true,
  description: 'Starting point of the agentflow',
  inputParams: [
    {
      label: 'Input Type',
      name: 'startInputType',
      type: 'options',
      options: [
        { label: 'Chat Input', name: 'chatInput', description: 'Start the conversation with chat input' },
        { label: 'Form Input', name: 'formInput', description: 'Start the workflow with form inputs' },
      ],
      default: 'chatInput',
    },
    { label: 'Ephemeral Memory', name: 'startEphemeralMemory', type: 'boolean', optional: true },
    { label: 'Flow State', name: 'startState', type: 'array', optional: true, array: [] },
    { label: 'Persist State', name: 'startPersistState', type: 'boolean', optional: true },
  ],
};

const CUSTOM_FUNCTION = {
  label: 'Custom Function',
  name: 'customFunctionAgentflow',
  version: 1.1,
  type: 'CustomFunction',
  color: '#E4B7FF',
  description: 'Execute custom function',
  inputParams: [
    { label: 'Input Variables', name: 'customFunctionInputVariables', type: 'array', optional: true, acceptVariable: true, array: [] },
    { label: 'Javascript Function', name: 'customFunctionJavascriptFunction', type: 'code' },
    { label: 'Update Flow State', name: 'customFunctionUpdateState', type: 'array', optional: true, acceptVariable: true, array: [] },
  ],
};

const DIRECT_REPLY = {
  label: 'Direct Reply',
  name: 'directReplyAgentflow',
  version: 1.0,
  type: 'DirectReply',
  color: '#4DDBBB',
  hideOutput: true,
  description: 'Directly reply to the user with a message',
  inputParams: [{ label: 'Message', name: 'directReplyMessage', type: 'string', rows: 4, acceptVariable: true }],
};

const startNode = () =>
  node('startAgentflow_0', START, { startInputType: 'chatInput', startEphemeralMemory: true, startState: '', startPersistState: '' }, 0);

function fastFlow() {
  const nodes = [startNode(), node('directReplyAgentflow_0', DIRECT_REPLY, { directReplyMessage: 'echo: {{ question }}' }, 250)];
  const edges = [edge('startAgentflow_0', START, 'directReplyAgentflow_0', START.color, DIRECT_REPLY.color)];
  return { nodes, edges, viewport: { x: 0, y: 0, zoom: 1 } };
}

// msSpec: a number of milliseconds (fixed), or 'question' (from the question).
// The code must not contain "{{" (Flowise would try to resolve it as a variable).
function slowFlow(msSpec) {
  const msExpr =
    msSpec === 'question'
      ? "(() => { const m = String($input || '').match(/\\d+/); const n = m ? parseInt(m[0], 10) : 6000; return Math.min(n, 600000); })()"
      : String(msSpec);
  const code = [
    `const ms = ${msExpr};`,
    'await new Promise((r) => setTimeout(r, ms));',
    "return 'slow done after ' + ms + ' ms: ' + $input;",
  ].join('\n');
  const nodes = [
    startNode(),
    node('customFunctionAgentflow_0', CUSTOM_FUNCTION, {
      customFunctionInputVariables: '',
      customFunctionJavascriptFunction: code,
      customFunctionUpdateState: '',
    }, 250),
    node('directReplyAgentflow_0', DIRECT_REPLY, { directReplyMessage: '{{ customFunctionAgentflow_0 }}' }, 500),
  ];
  const edges = [
    edge('startAgentflow_0', START, 'customFunctionAgentflow_0', START.color, CUSTOM_FUNCTION.color),
    edge('customFunctionAgentflow_0', CUSTOM_FUNCTION, 'directReplyAgentflow_0', CUSTOM_FUNCTION.color, DIRECT_REPLY.color),
  ];
  return { nodes, edges, viewport: { x: 0, y: 0, zoom: 1 } };
}

function usage(msg) {
  if (msg) process.stderr.write(`flows.js: ${msg}\n`);
  process.stderr.write('usage: node flows.js fast [name] | node flows.js slow [ms|question] [name]  (or --name=<name>)\n');
  process.exit(2);
}

function main(argv) {
  let name = null;
  const pos = [];
  for (const a of argv) {
    if (a.startsWith('--name=')) name = a.slice('--name='.length);
    else pos.push(a);
  }
  const kind = pos.shift();
  let flowData;
  if (kind === 'fast') {
    if (pos.length > 1) usage('too many arguments');
    if (pos.length) name = pos[0];
    name = name || 'e2e-queue-fast';
    flowData = fastFlow();
  } else if (kind === 'slow') {
    let msSpec = 6000;
    if (pos.length && (/^\d+$/.test(pos[0]) || pos[0] === 'question')) {
      const a = pos.shift();
      msSpec = a === 'question' ? 'question' : parseInt(a, 10);
    }
    if (pos.length > 1) usage('too many arguments');
    if (pos.length) name = pos[0];
    name = name || (msSpec === 'question' ? 'e2e-queue-slow-question' : `e2e-queue-slow-${msSpec}`);
    flowData = slowFlow(msSpec);
  } else {
    usage(kind ? `unknown flow "${kind}"` : 'no flow given');
  }
  const body = {
    name,
    deployed: false,
    isPublic: false,
    type: 'AGENTFLOW',
    flowData: JSON.stringify(flowData),
  };
  process.stdout.write(JSON.stringify(body) + '\n');
}

if (require.main === module) main(process.argv.slice(2));

module.exports = { fastFlow, slowFlow };
