// Sends track and identify calls to skyjoin with @segment/analytics-node,
// pointed at it with host and path; flushes, then prints one JSON line.
// Usage: node send.mjs HOST WRITE_KEY RUN_ID
import { Analytics } from '@segment/analytics-node'

const [host, writeKey, run] = process.argv.slice(2)
const analytics = new Analytics({ writeKey: writeKey || 'no-auth', host, path: '/v1/batch', maxEventsInBatch: 3, flushInterval: 200 })
const errors = []
analytics.on('error', (err) => errors.push(String(err && (err.reason || err.message || err))))

const places = [
  { latitude: 48.85, longitude: 2.35, city: 'Paris', country: 'France' },
  { latitude: 52.52, longitude: 13.41, city: 'Berlin', country: 'Germany' },
]
const now = new Date()
for (let i = 0; i < 4; i++) {
  analytics.track({
    messageId: `${run}-track-${i}`,
    userId: `user-${i}`,
    event: 'Order Completed',
    timestamp: new Date(now.getTime() - 60000),
    properties: { amount: 12.5 + i, items: ['a', 'b'], paid: i % 2 === 0, shipping: { days: 2, express: false } },
    context: { location: places[i % places.length], ip: '203.0.113.9' },
  })
}
analytics.identify({
  messageId: `${run}-identify-0`,
  userId: 'user-0',
  traits: { email: 'ann@example.com', firstName: 'Ann', lastName: 'Lee', phone: '+33 1 23 45 67 89', plan: 'pro', logins: 3, beta: true, address: { street: '1 Rue de Rivoli', city: 'Paris' } },
  context: { location: places[0] },
})
// No location: stored with status no_location.
analytics.track({ messageId: `${run}-nolocation-0`, anonymousId: 'anon-1', event: 'Page Scrolled', properties: { depth: 0.75 } })

await analytics.closeAndFlush({ timeout: 20000 })
console.log(JSON.stringify({ sent: 6, errors }))
