/**
 * The error catalogue of CONTRACT.md §2. Every failure that reaches a caller is one of these:
 * a stable `code` (the class name), the numeric service error code, structured fields and a cause.
 * The README's error table is this file in prose.
 */

/** Numeric service error code per error name (`Nats-Service-Error-Code`). */
export const ErrorStatus = {
  ValidationError: 400,
  InvalidTenantId: 400,
  TenantAccessDenied: 403,
  NotFound: 404,
  VersionConflict: 409,
  CommandIdReused: 409,
  PayloadTooLarge: 413,
  DecideError: 422,
  ApplyError: 500,
  RehydrationError: 500,
  ProgramError: 500,
  StorageError: 500,
  StreamError: 500,
  Unavailable: 503,
} as const;
export type ErrorCode = keyof typeof ErrorStatus;

/** Base class of every contract error. */
export abstract class AggregateError extends Error {
  abstract override readonly name: ErrorCode;
  /** Structured context, safe to log and to return to the caller. */
  readonly fields: Readonly<Record<string, unknown>>;

  constructor(message: string, fields: Record<string, unknown> = {}, options?: { cause?: unknown }) {
    super(message, options);
    this.fields = fields;
  }

  /** The stable string code, e.g. `VersionConflict`. */
  get code(): ErrorCode {
    return this.name;
  }

  /** The numeric service error code, e.g. 409. */
  get status(): number {
    return ErrorStatus[this.name];
  }

  /** The JSON body of an error reply. */
  toJSON(): { error: { code: ErrorCode; message: string } } {
    return { error: { code: this.name, message: this.message } };
  }
}

export class ValidationError extends AggregateError {
  override readonly name = "ValidationError";
}
export class InvalidTenantId extends AggregateError {
  override readonly name = "InvalidTenantId";
}
export class TenantAccessDenied extends AggregateError {
  override readonly name = "TenantAccessDenied";
}
export class NotFound extends AggregateError {
  override readonly name = "NotFound";
}
export class VersionConflict extends AggregateError {
  override readonly name = "VersionConflict";
}
export class CommandIdReused extends AggregateError {
  override readonly name = "CommandIdReused";
}
export class PayloadTooLarge extends AggregateError {
  override readonly name = "PayloadTooLarge";
}
export class DecideError extends AggregateError {
  override readonly name = "DecideError";
}
export class ApplyError extends AggregateError {
  override readonly name = "ApplyError";
}
export class RehydrationError extends AggregateError {
  override readonly name = "RehydrationError";
}
export class ProgramError extends AggregateError {
  override readonly name = "ProgramError";
}
export class StorageError extends AggregateError {
  override readonly name = "StorageError";
}
export class StreamError extends AggregateError {
  override readonly name = "StreamError";
}
export class Unavailable extends AggregateError {
  override readonly name = "Unavailable";
}

export function isAggregateError(e: unknown): e is AggregateError {
  return e instanceof AggregateError;
}

/** One line, no CR/LF, bounded: safe for the `Nats-Service-Error` header. */
export function headerSafe(message: string, max = 256): string {
  const line = message.replace(/[\r\n\t]+/g, " ").replace(/[^\x20-\x7e]/g, "?");
  return line.length > max ? `${line.slice(0, max - 3)}...` : line;
}
