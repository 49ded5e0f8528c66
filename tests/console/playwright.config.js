// Playwright for the console test (tests/tests/console.rs starts the servers and runs this).
// The browser is the system's Chromium (Debian's `chromium`), never a downloaded one.
module.exports = {
  testDir: __dirname,
  timeout: 60000,
  retries: 0,
  workers: 1,
  reporter: [["list"]],
  outputDir: process.env.PLAYWRIGHT_OUTPUT || "/tmp/strangler-playwright",
  use: {
    browserName: "chromium",
    headless: true,
    viewport: { width: 1280, height: 900 },
    launchOptions: {
      executablePath: process.env.CHROMIUM || "/usr/lib/chromium/chromium",
      args: ["--no-sandbox"],
    },
  },
};
