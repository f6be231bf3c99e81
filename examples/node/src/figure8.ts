// The JPX working paper's Figure 8 through a dltmw gateway, from another language.
//
//   node dist/figure8.js NETWORK_DIR [CLIENT_ID] [CHANNEL] [ACCOUNT_PREFIX]
//
// Opens accounts A, B, C at 10000; then endorses three transactions against the SAME state —
// deposit(A, 5000), withdraw(B, 2000), payment(A, C, 3000) — before submitting any of them, so
// the orderer puts them into one block and the committing peers mark the payment
// MVCC_READ_CONFLICT (it read A at the version the deposit replaced). Balances end at
// A=15000, B=8000, C=10000. Prints one line per transaction (`txN TX_ID CALL block N index I
// CODE`), the balances and `FIGURE8 OK` (exit 0) or
// `FIGURE8 DIFFERS` (exit 1); a failed call prints its gRPC code, ErrorInfo reason and message.
//
// Read your writes: every Endorse and Evaluate names the highest block this client saw committed
// (`minBlockNumber`), so the deposit right after the opens is never simulated by a peer that has
// not committed them yet (docs/wire.md).

import * as grpc from "@grpc/grpc-js";
import {
  CommitStatusQuery,
  CommitStatusResponse,
  EndorseResponse,
  GatewayServiceClient,
} from "./gen/dltmw/v1/gateway_service";
import { SignedProposal } from "./gen/dltmw/v1/proposal";
import { TxValidationCode, txValidationCodeToJSON } from "./gen/dltmw/v1/transaction";
import { ClientFiles, describeError } from "./wire";

const DEADLINE_MS = 30_000;

class Gateway {
  /** The highest block this client saw committed: the minBlockNumber of its next requests. */
  private seenBlock = 0n;

  constructor(
    private readonly me: ClientFiles,
    private readonly stub: GatewayServiceClient,
  ) {}

  private call<Req, Res>(
    method: (req: Req, md: grpc.Metadata, opts: Partial<grpc.CallOptions>, cb: (e: grpc.ServiceError | null, r: Res) => void) => unknown,
    request: Req,
  ): Promise<Res> {
    return new Promise((ok, fail) => {
      const deadline = new Date(Date.now() + DEADLINE_MS);
      method.call(this.stub, request, new grpc.Metadata(), { deadline }, (err, res) =>
        err ? fail(new Error(describeError(err))) : ok(res),
      );
    });
  }

  endorse(signed: SignedProposal): Promise<EndorseResponse> {
    const request = { signedProposal: signed, endorsingOrganizations: [], minBlockNumber: this.seenBlock };
    return this.call(this.stub.endorse, request);
  }

  /** Sign the prepared payload (exactly those bytes) into an Envelope and submit it. */
  async submit(prepared: Buffer): Promise<void> {
    const envelope = { payload: prepared, signature: this.me.sign(prepared), batchProof: undefined }; // signed alone
    await this.call(this.stub.submit, { envelope });
  }

  async commitStatus(channelId: string, txId: string): Promise<CommitStatusResponse> {
    const signed = this.me.signedQuery((q) => CommitStatusQuery.encode({ channelId, txId, ...q }).finish());
    const status: CommitStatusResponse = await this.call(this.stub.commitStatus, signed);
    if (status.blockNumber > this.seenBlock) this.seenBlock = status.blockNumber;
    return status;
  }

  async evaluate(channelId: string, contract: string, fn: string, args: string[]): Promise<string> {
    const { signed } = this.me.proposal(channelId, contract, fn, args);
    const reply = await this.call(this.stub.evaluate, { signedProposal: signed, minBlockNumber: this.seenBlock });
    return Buffer.from(reply.result?.payload ?? []).toString("utf8");
  }

  /** Endorse, sign, submit, wait for the commit: one whole transaction. */
  async transact(channelId: string, contract: string, fn: string, args: string[]): Promise<CommitStatusResponse> {
    const { signed, txId } = this.me.proposal(channelId, contract, fn, args);
    const endorsed = await this.endorse(signed);
    await this.submit(endorsed.preparedPayload);
    return this.commitStatus(channelId, txId);
  }
}

async function main(): Promise<number> {
  const [network, clientId = "user1.org1", channel = "trades", prefix = ""] = process.argv.slice(2);
  if (!network) {
    console.error("usage: node dist/figure8.js NETWORK_DIR [CLIENT_ID] [CHANNEL] [ACCOUNT_PREFIX]");
    return 2;
  }
  const me = new ClientFiles(network, clientId);
  const { address, credentials, options } = me.channel(me.gateway);
  const stub = new GatewayServiceClient(address, credentials, options);
  const gw = new Gateway(me, stub);
  const [a, b, c] = ["A", "B", "C"].map((x) => prefix + x);
  try {
    for (const account of [a, b, c]) {
      const opened = await gw.transact(channel, "bank", "open", [account, "10000"]);
      if (opened.result !== TxValidationCode.TX_VALIDATION_CODE_VALID) throw new Error(`open ${account} failed`);
    }
    const steps: [string, string[]][] = [
      ["deposit", [a, "5000"]],
      ["withdraw", [b, "2000"]],
      ["payment", [a, c, "3000"]],
    ];
    const proposals = steps.map(([fn, args]) => me.proposal(channel, "bank", fn, args));
    const endorsed = [];
    for (const p of proposals) endorsed.push(await gw.endorse(p.signed)); // all on one state
    for (const e of endorsed) await gw.submit(e.preparedPayload); // then ordered together
    const statuses = [];
    for (const p of proposals) statuses.push(await gw.commitStatus(channel, p.txId));
    statuses.forEach((st, i) => {
      const [fn, args] = steps[i];
      const code = txValidationCodeToJSON(st.result);
      const txId = proposals[i].txId;
      console.log(`tx${i + 1} ${txId} ${fn}(${args.join(", ")}) block ${st.blockNumber} index ${st.txIndex} ${code}`);
    });
    const balances: Record<string, number> = {};
    for (const account of [a, b, c]) balances[account] = Number(await gw.evaluate(channel, "bank", "balance", [account]));
    console.log(`balances ${a}=${balances[a]} ${b}=${balances[b]} ${c}=${balances[c]}`);
    const V = TxValidationCode;
    const ok =
      statuses[0].result === V.TX_VALIDATION_CODE_VALID &&
      statuses[1].result === V.TX_VALIDATION_CODE_VALID &&
      statuses[2].result === V.TX_VALIDATION_CODE_MVCC_READ_CONFLICT &&
      new Set(statuses.map((s) => s.blockNumber)).size === 1 &&
      balances[a] === 15000 &&
      balances[b] === 8000 &&
      balances[c] === 10000;
    console.log(ok ? "FIGURE8 OK" : "FIGURE8 DIFFERS");
    return ok ? 0 : 1;
  } finally {
    stub.close();
  }
}

main().then(
  (code) => process.exit(code),
  (err: Error) => {
    console.error(`figure8: ${err.message}`);
    process.exit(1);
  },
);
