// k6 provides console as a global; @types/k6 does not declare it.
declare const console: { log(...data: unknown[]): void; warn(...data: unknown[]): void; error(...data: unknown[]): void };
