/** The service version reported by `$SRV.INFO` and `--version`. */
export const VERSION = '0.1.0';
