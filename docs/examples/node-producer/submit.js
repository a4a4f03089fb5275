#!/usr/bin/env node
// Submit one Update Halo Ticket job from Node.js with celery-node.
//
//   node submit.js REDIS_URL JOB_FILE      (JOB_FILE "-" reads the job from stdin)
//
// Prints {"job_id": ..., "task_id": ...} once the job is on the queue. The job's record is
// stored under job_id: the job's own job_id when it has a valid one, else the task id, a UUID
// that celery-node makes. Exits 1 when the job could not be enqueued (nothing was enqueued,
// submitting it again is safe), 2 on bad usage.
"use strict";

const { randomUUID } = require("crypto");
const fs = require("fs");
const { createClient } = require("celery-node");

const TASK_NAME = "halo.update_ticket";
const QUEUE = "halo";
// The contract's job_id: a job without a valid one is recorded under its task id.
const JOB_ID = /^[A-Za-z0-9._:-]{1,128}$/;

async function main(argv) {
  if (argv.length !== 2) {
    console.error("usage: node submit.js REDIS_URL JOB_FILE");
    return 2;
  }
  const [redisUrl, jobFile] = argv;
  const job = JSON.parse(fs.readFileSync(jobFile === "-" ? 0 : jobFile, "utf8"));

  // The backend is never used: results are records in Redis, not Celery results.
  const client = createClient(redisUrl, redisUrl, QUEUE);
  // One try: a one-shot command fails at once and says why; its caller submits again later.
  client.conf.CELERY_BROKER_OPTIONS = { retryStrategy: () => null };
  const task = client.createTask(TASK_NAME);
  const taskId = randomUUID();
  // celery-node's applyAsync/sendTask push the message without returning the push's promise
  // (celery-node 0.5.9), so a process that exits right after may lose the job unseen. Build
  // the same message and wait for the LPUSH to be acknowledged instead.
  const message = client.createTaskMessage(taskId, task.name, [job], {});
  const broker = client.broker;
  await broker.isReady(); // rejects with the reason when Redis cannot be reached
  try {
    await broker.publish(message.body, "", QUEUE, message.headers, message.properties);
  } finally {
    await broker.disconnect();
  }
  const jobId = typeof job.job_id === "string" && JOB_ID.test(job.job_id) ? job.job_id : taskId;
  console.log(JSON.stringify({ job_id: jobId, task_id: taskId }));
  return 0;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err) => {
    console.error(`submit.js: ${err.message}`);
    process.exit(1);
  },
);
