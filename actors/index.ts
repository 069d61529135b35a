/**
 * The actors: one table owner per table (opening, serving and maintaining its
 * file), the notifier that delivers events to webhooks and Web Push, and the
 * Web Push subscriptions. Everything other layers use is exported here; the
 * rest of actors/ is internal.
 */
export { tableFilePath, tableOwnerMachine } from './table-owner';
export type { TableOwnerInput, TableOwnerOutput, TableOwnerReport, TableOwnerState, TableOwnerRef } from './table-owner';
export type { MaintenanceJob, MaintenanceOutcome, MaintenanceRequest } from './maintenance-job';
export { Notifier, notifierMachine } from './notifier';
export type { NotifierOptions, NotifierMachineInput, NotifyChannel, NotifyOutcomeListener } from './notifier';
export type { DeliveryOutcome } from './delivery-queue';
export { PushSubscriptions } from './push-subscriptions';
export type { PushSubscriptionRecord } from './push-subscriptions';
export { generateVapidKeys, isP256PublicKey } from './web-push';
export type { VapidKeys } from './web-push';
