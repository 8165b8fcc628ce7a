// flora-eval's warm javac: the JDK's own compiler (javax.tools) in one JVM, asked once per
// program. Protocol (harness/execute/worker.py, "Warm steps"): after one {"ready": true} line,
// each request line {"argv": ["javac", ...], "cwd": dir} is answered by one line
// {"exit_code", "stdout", "stderr"} once the class files are written. The JVM cannot change its
// working directory, so "." and the names of files in cwd are passed as absolute paths, and
// "cwd/" is taken out of the diagnostics again: they read as the cold `javac` prints them.
// Annotation processing is off (-proc:none): nothing of a program runs in this JVM.
import java.io.ByteArrayOutputStream;
import java.io.BufferedReader;
import java.io.File;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import javax.tools.JavaCompiler;
import javax.tools.ToolProvider;

public class JavacWarm {
    private final String s;
    private int i;

    private JavacWarm(String s) { this.s = s; }

    private void ws() { while (i < s.length() && Character.isWhitespace(s.charAt(i))) i++; }

    private Object value() {
        ws();
        char c = s.charAt(i);
        if (c == '"') return string();
        if (c == '[') {
            List<Object> list = new ArrayList<>();
            i++; ws();
            if (s.charAt(i) == ']') { i++; return list; }
            while (true) {
                list.add(value()); ws();
                if (s.charAt(i++) == ']') return list;
            }
        }
        if (c == '{') {
            Map<String, Object> map = new HashMap<>();
            i++; ws();
            if (s.charAt(i) == '}') { i++; return map; }
            while (true) {
                ws(); String key = string(); ws(); i++; // ':'
                map.put(key, value()); ws();
                if (s.charAt(i++) == '}') return map;
            }
        }
        int start = i;
        while (i < s.length() && ",]}".indexOf(s.charAt(i)) < 0) i++;
        return s.substring(start, i).trim();
    }

    private String string() {
        StringBuilder b = new StringBuilder();
        i++; // opening quote
        while (true) {
            char c = s.charAt(i++);
            if (c == '"') return b.toString();
            if (c != '\\') { b.append(c); continue; }
            char e = s.charAt(i++);
            switch (e) {
                case 'n': b.append('\n'); break;
                case 't': b.append('\t'); break;
                case 'r': b.append('\r'); break;
                case 'b': b.append('\b'); break;
                case 'f': b.append('\f'); break;
                case 'u': b.append((char) Integer.parseInt(s.substring(i, i + 4), 16)); i += 4; break;
                default: b.append(e);
            }
        }
    }

    private static String quote(String text) {
        StringBuilder b = new StringBuilder("\"");
        for (char c : text.toCharArray()) {
            if (c == '"' || c == '\\') b.append('\\').append(c);
            else if (c < 0x20 || c > 0x7e) b.append(String.format("\\u%04x", (int) c));
            else b.append(c);
        }
        return b.append('"').toString();
    }

    @SuppressWarnings("unchecked")
    private static String compile(JavaCompiler javac, String line) {
        Map<String, Object> request = (Map<String, Object>) new JavacWarm(line).value();
        List<Object> argv = (List<Object>) request.get("argv");
        String cwd = (String) request.get("cwd");
        List<String> args = new ArrayList<>();
        args.add("-proc:none");
        for (Object o : argv.subList(1, argv.size())) {
            String arg = (String) o;
            if (arg.equals(".")) arg = cwd;
            else if (!arg.startsWith("-") && new File(cwd, arg).exists()) arg = cwd + "/" + arg;
            args.add(arg);
        }
        if (!args.contains("-cp") && !args.contains("-classpath") && !args.contains("--class-path")) {
            // the cold javac's default: $CLASSPATH, else "." (this JVM's own class path is not it)
            String cp = System.getenv("CLASSPATH");
            List<String> entries = new ArrayList<>();
            for (String entry : (cp == null || cp.isEmpty() ? "." : cp).split(File.pathSeparator, -1)) {
                entries.add(entry.isEmpty() || entry.equals(".") ? cwd : entry);
            }
            args.add(0, String.join(File.pathSeparator, entries));
            args.add(0, "-classpath");
        }
        ByteArrayOutputStream out = new ByteArrayOutputStream(), err = new ByteArrayOutputStream();
        int code = javac.run(null, out, err, args.toArray(new String[0]));
        String prefix = cwd + "/";
        return "{\"exit_code\": " + code
            + ", \"stdout\": " + quote(out.toString(StandardCharsets.UTF_8).replace(prefix, ""))
            + ", \"stderr\": " + quote(err.toString(StandardCharsets.UTF_8).replace(prefix, "")) + "}";
    }

    public static void main(String[] argv) throws Exception {
        JavaCompiler javac = ToolProvider.getSystemJavaCompiler();
        PrintStream answers = new PrintStream(System.out, true, StandardCharsets.UTF_8);
        System.setOut(new PrintStream(new ByteArrayOutputStream()));  // nothing else reaches the pipe
        answers.println("{\"ready\": true}");
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        for (String line = in.readLine(); line != null; line = in.readLine()) {
            if (!line.isBlank()) answers.println(compile(javac, line));
        }
    }
}
