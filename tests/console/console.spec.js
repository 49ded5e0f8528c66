// The console in a real browser, against a running proxy with real upstreams (started by
// tests/tests/console.rs, which passes the admin address in STRANGLER_ADMIN): it shows the
// contexts, opens a mismatch with both answers, and a rollback click moves the weight to 0
// (checked through the API too). With SCREENSHOTS set, the main views are saved there.
const { test, expect } = require("@playwright/test");

const admin = process.env.STRANGLER_ADMIN;
const shots = process.env.SCREENSHOTS;

async function shot(page, name) {
  if (shots) await page.screenshot({ path: `${shots}/console-${name}.png`, fullPage: true });
}

test("the console shows the migration, a mismatch, and rolls a context back", async ({ page }) => {
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });

  await page.goto(`${admin}/`);
  const orders = page.locator("#contexts-table tbody tr", { hasText: "orders" });
  await expect(orders).toContainText("50 %");
  await expect(page.locator("#routes-table tbody")).toContainText("orders-read");
  await expect(page.locator("#moved")).not.toHaveText("–");
  await shot(page, "migration");

  await page.click('nav a[data-tab="shadow"]');
  await expect(page.locator("#shadow-routes")).toContainText("orders-read");
  const first = page.locator("#mismatches-table a[data-mismatch]").first();
  await expect(first).toBeVisible();
  await first.click();
  await expect(page.locator("#mismatch-view")).toBeVisible();
  await expect(page.locator("#difference-table tbody")).toContainText("$.upstream");
  await expect(page.locator("#expected-body")).toContainText('"legacy"');
  await expect(page.locator("#actual-body")).toContainText('"orders"');
  await expect(page.locator("#expected-body mark").first()).toBeVisible();
  await shot(page, "shadow");

  await page.click('nav a[data-tab="rollouts"]');
  const card = page.locator('.rollout[data-context="orders"]');
  await expect(card).toContainText("progressing");
  // The last check: the gate's figure against its threshold, the step's evidence so far.
  const gate = card.locator("table.gates tbody tr", { hasText: "error_rate" });
  await expect(gate).toContainText("≤ +1.00 pp");
  await expect(gate).toContainText("held");
  await expect(card.locator(".evidence")).toContainText("of 100 requests served by the new service at this step");
  await shot(page, "rollouts");
  const asked = [];
  page.on("dialog", async (d) => { asked.push(d.message()); await d.accept(); });
  await card.locator('button[data-action="rollback"]').click();
  await expect(page.locator('.rollout[data-context="orders"] .weight')).toHaveText("0 %");
  await expect(page.locator('.rollout[data-context="orders"]')).toContainText("rolled_back");
  expect(asked.join("\n")).toContain("back to the monolith");
  const api = await (await page.request.get(`${admin}/api/rollouts`)).json();
  const c = api.contexts.find((x) => x.context === "orders");
  expect(c.weight).toBe(0);
  expect(c.state.phase).toBe("rolled_back");
  await expect(page.locator("#audit-table tbody")).toContainText("rolled back");
  await expect(card).toContainText("not checked while rolled back");

  await page.click('nav a[data-tab="events"]');
  await expect(page.locator("#outbox-table tbody")).toContainText("orders");
  const consumer = page.locator("#consumers-table tbody tr", { hasText: "notifier" }).first();
  await expect(consumer).toContainText("shardId-");
  await page.click('nav a[data-tab="rules"]');
  await expect(page.locator("#rules-line")).toContainText("Last reload accepted");
  expect(errors).toEqual([]);
});
