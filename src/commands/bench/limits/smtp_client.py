"""The SMTP sink's own rate: a plain smtplib client sending small messages over one
connection for a while. Usage: smtp_client.py PORT SECONDS. Prints one JSON line."""
import json, smtplib, sys, time
from email.message import EmailMessage

port, seconds = int(sys.argv[1]), float(sys.argv[2])
msg = EmailMessage()
msg["From"] = "Repayments <repayments@example.com>"
msg["To"] = "customer@example.com"
msg["Subject"] = "Your installment is due soon"
msg.set_content("Hello,\n\nyour installment of 500.00 is due on Saturday.\n" * 20)
n, start = 0, time.monotonic()
with smtplib.SMTP("127.0.0.1", port) as s:
    s.ehlo()
    while time.monotonic() - start < seconds:
        s.send_message(msg)
        n += 1
secs = time.monotonic() - start
print(json.dumps({"messages": n, "seconds": secs, "per_second": n / secs}))
