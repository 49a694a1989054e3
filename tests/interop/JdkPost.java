// POSTs one event with java.net.http.HttpClient at its default settings (HTTP/2 preferred, so
// on plain http it sends "Connection: Upgrade, HTTP2-Settings" and "Upgrade: h2c"), then POSTs a
// second one on the same client (a kept-alive connection). Prints one line per request:
// "<status> <protocol> <body>". Run with the JDK 11+ source launcher:
//   java tests/interop/JdkPost.java <base url> <api key> <json body>...
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;

public class JdkPost {
    public static void main(String[] args) throws Exception {
        HttpClient client = HttpClient.newHttpClient();
        for (int i = 2; i < args.length; i++) {
            HttpRequest request = HttpRequest.newBuilder(URI.create(args[0] + "/v1/events"))
                .header("Authorization", "Bearer " + args[1])
                .header("Content-Type", "application/json")
                .POST(HttpRequest.BodyPublishers.ofString(args[i]))
                .build();
            HttpResponse<String> response = client.send(request, HttpResponse.BodyHandlers.ofString());
            System.out.println(response.statusCode() + " " + response.version() + " " + response.body());
        }
    }
}
