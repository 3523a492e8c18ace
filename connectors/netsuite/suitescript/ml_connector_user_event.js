/**
 * ml-connector change notice: tells the ml-connector runner that a record changed, so it is synced
 * within seconds instead of at the next poll.
 *
 * After every save of a record type this script is deployed on (customer, vendor, contact, invoice),
 * afterSubmit POSTs one small JSON object to the runner:
 *
 *   {"recordType": "customer", "id": "1137", "eventType": "edit", "contextType": "edit",
 *    "accountId": "1234567_SB1", "occurredAt": "2024-05-02T10:11:12.000Z"}
 *
 * with the integration's shared secret in the X-Webhook-Secret header (never in the URL, which
 * proxies log). The runner answers 202 and reads the full record itself with SuiteQL / the record
 * API, so no field values leave NetSuite here. `eventType` uses the runner's vocabulary (create, edit,
 * xedit, delete, ...); a save of another kind (approve, cancel, ...) is sent as "edit", with
 * NetSuite's own word kept in `contextType`. Deletions are sent as "delete": the runner records them
 * and syncs nothing (deletions are never synchronised).
 *
 * A failed POST is logged (N/log) and never thrown: afterSubmit runs after NetSuite has committed
 * the save, and the user's save must not fail because the runner is unreachable. The runner's
 * periodic SuiteQL poll on lastmodifieddate picks up whatever was missed.
 *
 * Script deployment parameters (see INSTALL.md beside this file):
 *   custscript_ml_connector_url     https://<runner host>/webhooks/netsuite/<integration key>
 *   custscript_ml_connector_secret  the integration's NetSuite shared secret, copied from the app
 *
 * Governance: one https.post, 10 units of the 1,000 a User Event script may use. N/https gives up
 * after 5 s to connect and 45 s in all; the runner answers well within that.
 *
 * @NApiVersion 2.1
 * @NScriptType UserEventScript
 * @NModuleScope SameAccount
 */
define(['N/https', 'N/log', 'N/runtime'], (https, log, runtime) => {
    const URL_PARAMETER = 'custscript_ml_connector_url';
    const SECRET_PARAMETER = 'custscript_ml_connector_secret';
    const SECRET_HEADER = 'X-Webhook-Secret';
    // What the runner accepts: runner/intake.py NETSUITE_RECORD_TYPES and NETSUITE_EVENT_TYPES.
    const RECORD_TYPES = ['contact', 'customer', 'invoice', 'vendor'];
    const EVENT_TYPES = ['approve', 'copy', 'create', 'delete', 'edit', 'inlineedit', 'xedit'];
    const FALLBACK_EVENT_TYPE = 'edit';
    const LOG_TITLE = 'ml-connector';
    const EXCERPT_LENGTH = 300; // characters of a refusal's body kept in the execution log

    /**
     * Send the change notice; whatever happens, return normally.
     * @param {Object} context - the User Event context (type, newRecord, oldRecord)
     */
    const afterSubmit = (context) => {
        try {
            notify(context);
        } catch (e) {
            // Never rethrow: the save is committed already, and the poll catches what we miss.
            log.error({
                title: LOG_TITLE,
                details: `change notice for ${label(context)} not sent: ${describe(e)}`,
            });
        }
    };

    const notify = (context) => {
        const contextType = String(context.type || '').toLowerCase();
        // A deleted record is only in oldRecord; every other save has newRecord (with the new id).
        const record = contextType === 'delete'
            ? (context.oldRecord || context.newRecord)
            : (context.newRecord || context.oldRecord);
        if (!record || record.id === undefined || record.id === null || record.id === '') {
            log.debug({ title: LOG_TITLE, details: `no record id for a ${contextType} event; nothing sent` });
            return;
        }
        const recordType = String(record.type || '').toLowerCase();
        if (RECORD_TYPES.indexOf(recordType) < 0) {
            log.audit({
                title: LOG_TITLE,
                details: `${recordType} records are not synced by ml-connector; remove this deployment`,
            });
            return;
        }
        const script = runtime.getCurrentScript();
        const url = String(script.getParameter({ name: URL_PARAMETER }) || '').trim();
        const secret = String(script.getParameter({ name: SECRET_PARAMETER }) || '').trim();
        if (!url || !secret) {
            log.error({
                title: LOG_TITLE,
                details: `set ${URL_PARAMETER} and ${SECRET_PARAMETER} on this script deployment `
                    + `(Parameters subtab); the change to ${recordType} ${record.id} was not sent`,
            });
            return;
        }
        const payload = {
            recordType: recordType,
            id: String(record.id),
            eventType: EVENT_TYPES.indexOf(contextType) >= 0 ? contextType : FALLBACK_EVENT_TYPE,
            contextType: contextType,
            accountId: runtime.accountId,
            occurredAt: new Date().toISOString(),
        };
        const headers = { 'Content-Type': 'application/json' };
        headers[SECRET_HEADER] = secret;
        const response = https.post({ url: url, body: JSON.stringify(payload), headers: headers });
        const what = `${recordType} ${payload.id} (${payload.eventType})`;
        if (response.code >= 200 && response.code < 300) {
            log.debug({ title: LOG_TITLE, details: `sent ${what}: HTTP ${response.code}` });
            return;
        }
        // The runner's refusals say what to fix (401 bad_secret, 403 ip_not_allowed, 404 unknown
        // integration, ...) and never repeat the secret.
        log.error({
            title: LOG_TITLE,
            details: `the runner refused ${what}: HTTP ${response.code} ${excerpt(response.body)}`,
        });
    };

    const label = (context) => {
        const record = (context && (context.newRecord || context.oldRecord)) || {};
        return `${record.type || 'record'} ${record.id === undefined ? '?' : record.id}`;
    };

    const excerpt = (text) => String(text || '').slice(0, EXCERPT_LENGTH);

    const describe = (e) => {
        if (!e) {
            return 'unknown error';
        }
        const name = e.name || e.type || 'Error';
        return `${name}: ${excerpt(e.message || String(e))}`;
    };

    return { afterSubmit: afterSubmit };
});
