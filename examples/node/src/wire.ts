// Everything a dltmw client needs besides the generated stubs, written from protos/ and
// docs/wire.md only: the client's files, the signing rule, tx ids, signed headers and queries,
// mutual TLS with the node id as the TLS server name, and reading ErrorInfo from a failed call.

import { createHash, createPrivateKey, KeyObject, randomBytes, sign, X509Certificate } from "node:crypto";
import { readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import * as grpc from "@grpc/grpc-js";
import { parse } from "smol-toml";
import { SignatureAlgorithm } from "./gen/dltmw/v1/algorithms";
import { Header, HeaderType } from "./gen/dltmw/v1/common";
import { Identity } from "./gen/dltmw/v1/identity";
import { ContractInvocation, Proposal, SignedProposal } from "./gen/dltmw/v1/proposal";
import { Timestamp } from "./gen/google/protobuf/timestamp";
import { ErrorInfo } from "./gen/google/rpc/error_details";
import { Status } from "./gen/google/rpc/status";

// P-256 group order n; a signature's s must be <= n/2 (low-S), or the node refuses it.
const P256_N = BigInt("0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551");
const NONCE_BYTES = 24;

/** A client of a network directory made by `dltmw init`: clients/<id>/client.toml and its files. */
export class ClientFiles {
  readonly id: string;
  readonly org: string;
  readonly gateway: string;
  readonly identity: Uint8Array; // serialised Identity: the exact bytes used everywhere
  private readonly key: KeyObject;
  private readonly files: Record<string, string>;

  constructor(network: string, clientId: string) {
    const path = join(network, "clients", clientId, "client.toml");
    const cfg = parse(readFileSync(path, "utf8")) as {
      client: { id: string; org: string; gateway: string };
      files: Record<string, string>;
    };
    const home = dirname(path);
    this.files = Object.fromEntries(Object.entries(cfg.files).map(([k, v]) => [k, resolve(home, v)]));
    this.id = cfg.client.id;
    this.org = cfg.client.org;
    this.gateway = cfg.client.gateway;
    const cert = new X509Certificate(readFileSync(this.files.identity_cert));
    // Unspecified: the algorithm follows the certificate's key (ECDSA P-256 here); a zero enum
    // is not serialised, so these are the same bytes every other client sends. A client names
    // itself in full: no certificate_ref (references are for the channel config's nodes, and an
    // empty bytes field is not serialised either).
    this.identity = Identity.encode({
      orgId: this.org,
      certificateDer: cert.raw,
      signatureAlgorithm: SignatureAlgorithm.SIGNATURE_ALGORITHM_UNSPECIFIED,
      certificateRef: Buffer.alloc(0),
    }).finish();
    this.key = createPrivateKey(readFileSync(this.files.identity_key));
  }

  /** The signing rule: ECDSA P-256 over SHA-256 of exactly `data`, DER-encoded, low-S. */
  sign(data: Uint8Array): Buffer {
    const raw = sign("sha256", data, { key: this.key, dsaEncoding: "ieee-p1363" });
    const r = BigInt("0x" + raw.subarray(0, 32).toString("hex"));
    let s = BigInt("0x" + raw.subarray(32).toString("hex"));
    if (s > P256_N / 2n) s = P256_N - s;
    return derSignature(r, s);
  }

  /** Where node `nodeId` listens: run/endpoints/<node id> holds "host:port" once it serves. */
  address(nodeId: string): string {
    return readFileSync(join(this.files.address_book, nodeId), "utf8").trim();
  }

  /** Mutual TLS to `nodeId`: our TLS certificate, the network's roots, and the node id as the
   * TLS server name (node certificates name the node id, 127.0.0.1 and localhost). */
  channel(nodeId: string): { address: string; credentials: grpc.ChannelCredentials; options: grpc.ChannelOptions } {
    const credentials = grpc.credentials.createSsl(
      readFileSync(this.files.tls_roots),
      readFileSync(this.files.tls_key),
      readFileSync(this.files.tls_cert),
    );
    const options = { "grpc.ssl_target_name_override": nodeId, "grpc.default_authority": nodeId };
    return { address: this.address(nodeId), credentials, options };
  }

  /** A signed proposal and its tx id: tx_id = lower-case hex SHA-256(nonce || creator). */
  proposal(channelId: string, contract: string, fn: string, args: string[]): { signed: SignedProposal; txId: string } {
    const nonce = randomBytes(NONCE_BYTES);
    const txId = createHash("sha256").update(nonce).update(this.identity).digest("hex");
    const header = Header.encode({
      type: HeaderType.HEADER_TYPE_ENDORSER_TRANSACTION,
      channelId,
      txId,
      creator: Buffer.from(this.identity),
      nonce,
      timestamp: now(),
    }).finish();
    const payload = ContractInvocation.encode({
      contract,
      function: fn,
      args: args.map((a) => Buffer.from(a, "utf8")),
    }).finish();
    const proposalBytes = Buffer.from(Proposal.encode({ header: Buffer.from(header), payload: Buffer.from(payload) }).finish());
    // signed alone: no batch proof (a client may sign many at once, docs/wire.md `BatchProof`)
    return { signed: { proposalBytes, signature: this.sign(proposalBytes), batchProof: undefined }, txId };
  }

  /** A signed query (CommitStatusQuery, EventsQuery, ...): requester and timestamp set, then the
   * serialised bytes and the signature over exactly those bytes. */
  signedQuery(encode: (q: { requester: Buffer; timestamp: Timestamp }) => Uint8Array): { query: Buffer; signature: Buffer } {
    const query = Buffer.from(encode({ requester: Buffer.from(this.identity), timestamp: now() }));
    return { query, signature: this.sign(query) };
  }
}

function now(): Timestamp {
  const ms = Date.now();
  return { seconds: BigInt(Math.floor(ms / 1000)), nanos: (ms % 1000) * 1_000_000 };
}

function derInteger(n: bigint): Buffer {
  let hex = n.toString(16);
  if (hex.length % 2) hex = "0" + hex;
  let bytes = Buffer.from(hex, "hex");
  if (bytes[0] & 0x80) bytes = Buffer.concat([Buffer.from([0]), bytes]);
  return Buffer.concat([Buffer.from([0x02, bytes.length]), bytes]);
}

function derSignature(r: bigint, s: bigint): Buffer {
  const body = Buffer.concat([derInteger(r), derInteger(s)]);
  return Buffer.concat([Buffer.from([0x30, body.length]), body]);
}

/** "CODE reason: message" of a failed call: the gRPC code plus google.rpc.ErrorInfo (domain
 * "dltmw.v1") from the `grpc-status-details-bin` trailer. */
export function describeError(err: grpc.ServiceError): string {
  const details = err.metadata?.get("grpc-status-details-bin") ?? [];
  let reason = "";
  for (const raw of details) {
    const status = Status.decode(raw as Buffer);
    for (const any of status.details) {
      if (any.typeUrl === "type.googleapis.com/google.rpc.ErrorInfo") {
        const info = ErrorInfo.decode(any.value);
        if (info.domain === "dltmw.v1") reason = ` ${info.reason}`;
      }
    }
  }
  return `${grpc.status[err.code]}${reason}: ${err.details}`;
}
